"""Entity views: the radiology terms a free text names, found with a lexicon."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from inference.models.config import DualEncoderConfig
from inference.models.dual_encoder import DualEncoder
from inference.models.entities import LexiconError, load_lexicon
from inference.packages import PackageError, load_findings_package
from training import fit
from training.archive.records import ArchiveRecord
from training.config import TrainConfig, TrainConfigError, load_train_config
from training.datasets import training_views
from training.distributed import DistContext
from training.loss import contrastive_loss
from training.workflow import train_and_package

from .conftest import write_train_config

REPO = Path(__file__).resolve().parents[2]

LEXICON = """
[[entity]]
name = "CT"
terms = ["CT", "computed tomography"]

[[entity]]
name = "MRI"
terms = ["MR", "MRI"]

[[entity]]
name = "sagittal"
terms = ["sagittal"]

[[entity]]
name = "fat suppressed"
terms = ["fat sat", "fat-saturated"]
"""


def _lexicon(tmp_path: Path, text: str = LEXICON) -> Path:
    path = tmp_path / "entities.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_entities_are_named_once_in_the_order_the_text_names_them(tmp_path: Path) -> None:
    lexicon = load_lexicon(_lexicon(tmp_path))
    text = "Sagittal fat-saturated MRI, then CT; the MRI again and computed  tomography."
    assert lexicon.find(text) == ["sagittal", "fat suppressed", "MRI", "CT"]
    assert lexicon.view(text) == "sagittal, fat suppressed, MRI, CT"
    assert lexicon.view("a normal chest radiograph") == ""


def test_capitalised_terms_match_case_sensitively_and_all_terms_as_whole_words(
    tmp_path: Path,
) -> None:
    lexicon = load_lexicon(_lexicon(tmp_path))
    # "ct" in a word, lowercase "ct", "Mr." as a title and "MRIs-like" words are not the modality.
    assert lexicon.find("the act of a ct scan, seen by Mr. Smith; CTA; pre-MRI") == []
    # Lowercase terms match in any case; hyphens and word characters bound a match.
    assert lexicon.find("FAT SAT images, SAGITTAL view") == ["fat suppressed", "sagittal"]
    assert lexicon.find("parasagittal") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 1", "no \\[\\[entity\\]\\] tables"),
        ("[[entity]]\nterms = ['CT']", "entity 1 has no name"),
        ("[[entity]]\nname = 'CT'\nterms = []", "'CT': terms must be a list"),
        ("[[entity]]\nname = 'CT'\nterms = 'CT'", "'CT': terms must be a list"),
        ("[[entity", "cannot read entity lexicon"),
    ],
)
def test_a_bad_lexicon_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LexiconError, match=message):
        load_lexicon(_lexicon(tmp_path, text))
    with pytest.raises(LexiconError, match="cannot read entity lexicon"):
        load_lexicon(tmp_path / "missing.toml")


def test_the_entity_view_joins_the_training_views_of_a_record(tmp_path: Path) -> None:
    lexicon = load_lexicon(_lexicon(tmp_path))
    record = ArchiveRecord(
        key="a.png",
        case_id="c1",
        split="train",
        sources=(),
        sections=(("caption", "Sagittal MRI of the knee"), ("findings", "CT was normal")),
        labels=(("modality", "CT"),),  # a label column is never read for the view
    )
    views = [["caption"], ["caption", "findings"]]
    assert training_views(record, views) == (
        "Sagittal MRI of the knee",
        "Sagittal MRI of the knee CT was normal",
    )
    with_entities = training_views(record, views, lexicon)
    assert with_entities[-1] == "sagittal, MRI"
    both = training_views(record, views, lexicon, ("caption", "findings"))
    assert both[-1] == "sagittal, MRI, CT"
    plain = ArchiveRecord(
        key="b.png",
        case_id="c2",
        split="train",
        sources=(),
        sections=(("caption", "normal study"),),
    )
    assert training_views(plain, views, lexicon) == ("normal study",)


def test_the_config_checks_its_lexicon(tmp_path: Path, archive: Path) -> None:
    path = write_train_config(tmp_path, archive)
    text = path.read_text(encoding="utf-8")
    data = f'[data]\narchive = "{archive}"\n'
    bad = text.replace(data, data + 'entity_lexicon = "nowhere.toml"\n')
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(TrainConfigError, match=r"data\.entity_lexicon.*nowhere\.toml"):
        load_train_config(path)
    _lexicon(tmp_path)
    good = text.replace(data, data + 'entity_lexicon = "entities.toml"\n')
    path.write_text(good, encoding="utf-8")
    config = load_train_config(path)
    assert config.data.entity_lexicon == tmp_path / "entities.toml"
    assert config.data.entity_sections == ("caption",)


def test_the_shipped_radiology_lexicon_reads_medpix_style_captions() -> None:
    lexicon = load_lexicon(REPO / "conf" / "findings" / "radiology-entities.toml")
    caption = "Fat-saturated Sagittal T2 MRI of the lumbar spine shows a mass"
    assert lexicon.view(caption) == "fat suppressed, sagittal, T2 weighted, MRI, spine"
    assert lexicon.view("Axial contrast enhanced CT of the abdomen") == (
        "axial, contrast enhanced, CT, abdomen"
    )


def _config_with_lexicon(
    tmp_path: Path, archive: Path, data_lines: str = "", **optim: object
) -> TrainConfig:
    path = write_train_config(tmp_path, archive, **optim)
    data = f'[data]\narchive = "{archive}"\n'
    text = path.read_text(encoding="utf-8")
    lines = 'entity_lexicon = "entities.toml"\n' + data_lines
    path.write_text(text.replace(data, data + lines), "utf-8")
    _lexicon(tmp_path)
    return load_train_config(path)


def test_entity_loss_contrasts_only_the_images_whose_text_names_entities() -> None:
    config = DualEncoderConfig.from_dict(
        {
            "embed_dim": 8,
            "image": {"image_size": [32, 32], "layers": [1, 1, 1, 1], "widths": [8, 8, 8, 8]},
            "text": {"source": "scratch", "hidden_size": 16, "num_layers": 1, "num_heads": 2},
        }
    )
    model = DualEncoder(config, vocab_size=50)
    bank = fit._TextBank(["CT", "MRI", "a caption"])
    bank.features = torch.randn(3, 16)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    cpu = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    # Images 0 and 3 name "CT", image 2 "MRI", image 1 nothing (its sampled text: the caption).
    got = fit._entity_loss(model, bank, img, [0, -1, 1, 0], [2, 2, 2, 2], None, cpu)  # type: ignore[arg-type]
    text = model.project_text(bank.features[[0, 1, 0]])
    want = contrastive_loss(img[[0, 2, 3]], text, model.scale(), torch.tensor([0, 1, 0]))
    assert torch.allclose(got, want)
    nothing = fit._entity_loss(model, bank, img, [-1, -1, 1, -1], [2, 2, 2, 2], None, cpu)  # type: ignore[arg-type]
    assert nothing.requires_grad and float(nothing.detach()) == 0.0


def test_entity_loss_training_differs_from_the_sampled_view_and_resumes_exactly(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = _config_with_lexicon(tmp_path, archive, epochs=2)
    own_loss = _config_with_lexicon(tmp_path, archive, epochs=2, entity_loss_weight=1.0)
    assert own_loss.optim.entity_loss_weight == 1.0
    cpu = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    calls: list[int] = []
    real = fit._entity_loss

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(fit, "_entity_loss", counted)
    a = fit.train(sampled, tmp_path / "sampled", cpu, progress=False)
    assert not calls  # the entity view is sampled among the text views: no loss of its own
    b = fit.train(own_loss, tmp_path / "own", cpu, progress=False)
    assert len(calls) == b.epochs_run * (b.train_records // own_loss.optim.batch_size)
    name = "image_encoder.net.conv1.weight"
    assert not torch.allclose(a.model.state_dict()[name], b.model.state_dict()[name])

    stopped = replace(own_loss, optim=replace(own_loss.optim, max_steps=3))
    fit.train(stopped, tmp_path / "split", cpu, progress=False)
    resumed = fit.train(own_loss, tmp_path / "split", cpu, progress=False)
    for key, value in b.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[key], atol=1e-3), key


def test_entity_loss_needs_a_lexicon(tmp_path: Path, archive: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"optim\.entity_loss_weight.*entity_lexicon"):
        load_train_config(write_train_config(tmp_path, archive, entity_loss_weight=1.0))
    with pytest.raises(TrainConfigError, match=r"optim\.entity_loss_weight"):
        _config_with_lexicon(tmp_path, archive, entity_loss_weight=-0.5)


@pytest.mark.parametrize("embed_entity_view", [True, False])
def test_the_package_embeds_texts_with_their_entity_view_when_the_config_says_so(
    tmp_path: Path, archive: Path, embed_entity_view: bool
) -> None:
    flag = f"embed_entity_view = {str(embed_entity_view).lower()}\n"
    config = _config_with_lexicon(tmp_path, archive, flag, epochs=1)
    outcome = train_and_package(
        config, tmp_path / "models", tmp_path / "run", progress=False, replicates=20
    )
    package = outcome.package
    assert package is not None
    model = load_findings_package(package)
    card = (package / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert (model.entity_lexicon is not None) is embed_entity_view
    assert ("entities.toml" in model.manifest.files) is embed_entity_view
    assert ("- Text embedding:" in card) is embed_entity_view
    texts = ["Sagittal T2 MRI of the spine", "a normal study"]
    own = model.embed_texts_alone(texts)
    embedded = model.embed_texts(texts)
    assert torch.allclose(embedded[1], own[1])  # names no entity: the text alone
    if embed_entity_view:
        view = model.embed_texts_alone(["sagittal, MRI"])[0]
        assert torch.allclose(embedded[0], F.normalize(own[0] + view, dim=-1), atol=1e-6)
        # The lexicon is part of the model: an altered one is refused like altered weights.
        lexicon = package / "entities.toml"
        lexicon.write_text(lexicon.read_text(encoding="utf-8") + "\n", encoding="utf-8")
        with pytest.raises(PackageError, match=r"entities\.toml does not match"):
            load_findings_package(package)
    else:
        assert torch.allclose(embedded, own)
