"""Packages (save, load, hash check, never overwritten) and the registry commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference.packages import PackageError, load_findings_package, verify_package
from training.config import load_train_config
from training.distributed import DistContext
from training.fit import train
from training.package import next_version, write_package
from vlnode.cli import main

from .conftest import write_train_config

CPU = DistContext(rank=0, world_size=1, device=torch.device("cpu"))


@pytest.fixture
def package(tmp_path: Path, archive: Path) -> Path:
    config = load_train_config(write_train_config(tmp_path, archive, epochs=1))
    result = train(config, tmp_path / "run", CPU, progress=False)
    root = tmp_path / "models"
    version = next_version(root, config.name)
    assert version == "1"
    destination = root / config.name / version
    write_package(
        destination,
        config.name,
        version,
        "findings",
        result.model,
        result.tokenizer,
        config.catalogue,
    )
    return destination


def test_package_round_trip_gives_the_same_embeddings(package: Path, archive: Path) -> None:
    loaded = load_findings_package(package)
    assert loaded.manifest.version == "1"
    emb = loaded.embed_texts(["Axial CT of the chest", "Sagittal T2 MRI"])
    again = load_findings_package(package).embed_texts(["Axial CT of the chest", "Sagittal T2 MRI"])
    assert emb.shape == (2, 16) and torch.allclose(emb, again)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_weights_are_stored_in_half_precision_and_load_as_float32(
    tmp_path: Path, archive: Path
) -> None:
    from safetensors.torch import load_file

    config = load_train_config(write_train_config(tmp_path, archive, epochs=1))
    trained = train(config, tmp_path / "run", CPU, progress=False)
    destination = tmp_path / "models" / config.name / "1"
    write_package(
        destination,
        config.name,
        "1",
        "findings",
        trained.model,
        trained.tokenizer,
        config.catalogue,
    )
    weights = destination / "weights.safetensors"
    # The weights get the mode of every other file of the package (the umask's), not 0600.
    assert weights.stat().st_mode == (destination / "config.json").stat().st_mode
    stored = load_file(str(weights))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    loaded = load_findings_package(destination)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    texts = ["Axial CT of the chest", "Sagittal T2 MRI"]
    tokens = trained.tokenizer(texts)
    with torch.no_grad():
        before = trained.model.encode_text(tokens.input_ids, tokens.attention_mask)
    # Rounding the weights to float16 moves a unit embedding by about 1e-3 at most.
    assert torch.allclose(loaded.embed_texts(texts), before, atol=1e-2)


def test_altered_package_is_refused(package: Path) -> None:
    verify_package(package)
    weights = package / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"weights\.safetensors does not match"):
        load_findings_package(package)


def test_versions_are_never_overwritten(package: Path) -> None:
    loaded = load_findings_package(package)
    with pytest.raises(FileExistsError, match="never reused"):
        write_package(
            package,
            "x",
            "1",
            "findings",
            loaded.model,
            loaded.tokenizer,
            package / "catalogue.toml",
        )
    assert next_version(package.parent.parent, package.parent.name) == "2"


def test_registry_commands(
    package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VLNODE_STORE__DATA_DIR", str(tmp_path / "data"))
    assert main(["models", "list"]) == 0
    assert "no model versions" in capsys.readouterr().out
    assert main(["models", "register", str(package)]) == 0
    registered = tmp_path / "data" / "models" / "synthetic-tiny" / "1"
    assert (registered / "package.json").is_file()
    # The same version again is refused; nothing is overwritten.
    assert main(["models", "register", str(package)]) == 1
    assert "never overwritten" in capsys.readouterr().err
    assert main(["models", "activate", "synthetic-tiny", "1"]) == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-tiny" in out and "yes" in out
    assert main(["models", "show", "synthetic-tiny"]) == 0
    assert "integrity ok" in capsys.readouterr().out
    assert main(["models", "activate", "synthetic-tiny", "9"]) == 1
    from inference.packages import load_active_findings_model
    from store.database import make_engine, make_session_factory
    from vlnode.settings import load_settings

    engine = make_engine(load_settings().database_url)
    with make_session_factory(engine)() as session:
        active = load_active_findings_model(session)
        assert active is not None and active.manifest.name == "synthetic-tiny"
    engine.dispose()
    manifest = json.loads((registered / "package.json").read_text())
    (registered / "config.json").write_text("{}", encoding="utf-8")
    assert main(["models", "show", "synthetic-tiny", "1"]) == 1
    assert manifest["content_hash"]


def test_evaluate_command_prints_and_writes_json(
    package: Path, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--package",
            str(package),
            "--data",
            str(archive),
            "--split",
            "dev",
            "--json",
            str(out),
            "--bootstrap",
            "50",
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "modality: macro one-vs-rest AUC" in printed
    results = json.loads(out.read_text())
    modality = results["groups"]["modality"]
    assert modality["n"] == 12 and 0.0 <= modality["macro_auc"]["value"] <= 1.0
    assert modality["macro_auc"]["ci_low"] <= modality["macro_auc"]["ci_high"]
    assert "recall_at_10" in results["retrieval"]
    assert (tmp_path / "plots" / "roc_modality.png").is_file()


def test_linear_probe_protocol_runs_and_pairs_random_inits(package: Path, archive: Path) -> None:
    from training.workflow import probe_package

    result = probe_package(
        package, archive, "train", "dev", ["type", "modality"], replicates=20, min_eval_per_class=3
    )
    task = result["tasks"]["type"]
    assert task["classes"] == ["CT", "MR"]
    ten = task["fractions"]["0.1"]
    assert ten["labels_used"] == 2  # one per class at 10% of 12 labels
    assert len(ten["pretrained_auc_per_subset"]) == 5 == len(ten["random_auc_per_run"])
    assert ten["difference_ci_low"] <= ten["difference"] + 1e-9
    full = task["fractions"]["1"]
    assert len(full["pretrained_auc_per_subset"]) == 1 and len(full["random_auc_per_run"]) == 5
    # Two tasks on the same images: their macro average is reported too.
    assert result["macro"]["0.1"]["pretrained_auc"] == pytest.approx(ten["pretrained_auc"])


def test_reserved_versions_differ(tmp_path: Path) -> None:
    from training.package import reserve_version

    first = reserve_version(tmp_path, "m")
    second = reserve_version(tmp_path, "m")
    assert (first.name, second.name) == ("1", "2") and first.is_dir() and second.is_dir()
