"""Training the impression generator: seeded, resumable, packaged and evaluated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from inference.impression.package import load_impression_package
from training.config import TrainConfigError, load_train_config
from training.impression.config import ImpressionTrainConfig
from training.impression.dataset import read_impression_set
from training.impression.fit import train_impression
from training.impression.workflow import evaluate_package, result_lines, train_and_package

from .conftest import write_config


def _config(tmp_path: Path, archive: Path, **optim: Any) -> ImpressionTrainConfig:
    config = load_train_config(write_config(tmp_path, archive))
    assert isinstance(config, ImpressionTrainConfig)
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, **optim))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_is_read_with_the_task_and_relative_paths(tmp_path: Path, archive: Path) -> None:
    config = _config(tmp_path, archive)
    assert config.task == "impression" and config.name == "impression-test"
    assert config.data.archive == archive.resolve()
    assert config.model.decoder.hidden_size == 16 and config.optim.epochs == 2


def test_bad_values_are_named(tmp_path: Path, archive: Path) -> None:
    path = write_config(tmp_path, archive, optim_extra="lm_epochs = -1")
    with pytest.raises(TrainConfigError, match="lm_epochs"):
        load_train_config(path)
    path.write_text(path.read_text().replace('kind = "gpt2"', 'kind = "lstm"'))
    with pytest.raises(TrainConfigError, match=r"decoder\.kind"):
        load_train_config(path)


def test_same_seed_same_weights(tmp_path: Path, archive: Path) -> None:
    config = _config(tmp_path, archive, epochs=1)
    a = train_impression(config, tmp_path / "a", progress=False)
    b = train_impression(config, tmp_path / "b", progress=False)
    assert _same(a.model.trained_state(), b.model.trained_state())
    other = train_impression(
        dataclasses.replace(config, optim=dataclasses.replace(config.optim, seed=1)),
        tmp_path / "c",
        progress=False,
    )
    assert not _same(a.model.trained_state(), other.model.trained_state())


def test_resume_equals_an_uninterrupted_run(tmp_path: Path, archive: Path) -> None:
    config = _config(tmp_path, archive, epochs=2)
    whole = train_impression(config, tmp_path / "whole", progress=False)
    steps_per_epoch = 12 // config.optim.batch_size
    stopped = dataclasses.replace(
        config, optim=dataclasses.replace(config.optim, max_steps=steps_per_epoch)
    )
    first = train_impression(stopped, tmp_path / "split", progress=False)
    assert first.epochs_run == 1 and (tmp_path / "split" / "checkpoint.pt").is_file()
    resumed = train_impression(config, tmp_path / "split", progress=False)
    assert resumed.epochs_run == 1
    assert _same(whole.model.trained_state(), resumed.model.trained_state())
    log = (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]


def test_warm_start_runs_first_and_is_skipped_on_resume(tmp_path: Path, archive: Path) -> None:
    config = _config(tmp_path, archive, epochs=1, lm_epochs=1)
    train_impression(config, tmp_path / "run", progress=False)
    phases = [
        json.loads(x)["phase"]
        for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert phases == ["warm start", "image-conditioned"]
    again = dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs=2))
    train_impression(again, tmp_path / "run", progress=False)
    phases = [
        json.loads(x)["phase"]
        for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert phases == ["warm start", "image-conditioned", "image-conditioned"]


def test_package_round_trip_and_evaluation(tmp_path: Path, archive: Path) -> None:
    config = _config(tmp_path, archive)
    outcome = train_and_package(config, tmp_path / "models", tmp_path / "run", False, True, 20)
    assert outcome.package is not None
    package = load_impression_package(outcome.package)
    assert package.manifest.task == "impression"
    dev = read_impression_set(archive, "dev", ("caption",), package.config.image)
    grid, pooled = package.features(dev.images)
    texts = package.describe(grid, pooled)
    assert all(t and t[0].isupper() and t.endswith(".") for t in texts)
    # Evaluated again from the written files: the same texts, so the same figures.
    again = evaluate_package(outcome.package, archive, "dev", replicates=20)
    assert again["text"] == outcome.results["text"]
    assert [e["generated"] for e in again["examples"]] == [texts[i] for i in (0, 4, 8)]
    assert (outcome.package / "MODEL_CARD.md").is_file()
    assert (outcome.package / "metrics.json").is_file()
    lines = result_lines(again)
    assert any(line.startswith("| ROUGE-L |") for line in lines)
    assert "micro" in again["clinical"]["f1"]
    # The retrieval baseline answers with training captions only.
    train_texts = set(package.bank.texts)
    assert {e["retrieved"] for e in again["examples"]} <= train_texts


def test_altered_package_is_refused(tmp_path: Path, archive: Path) -> None:
    from inference.packages import PackageError

    config = _config(tmp_path, archive, epochs=1)
    outcome = train_and_package(config, tmp_path / "models", tmp_path / "run", False, False)
    assert outcome.package is not None
    bank = outcome.package / "retrieval.json"
    bank.write_text(bank.read_text().replace("CT", "MR"))
    with pytest.raises(PackageError, match=r"retrieval\.json"):
        load_impression_package(outcome.package)
