"""Segmentation training: resume equals the uninterrupted run; logs; package round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.packages import PackageError
from inference.pipelines.segmentation import load_pipeline
from inference.segmentation.package import load_segmentation_package
from inference.segmentation.segment import segment_volume
from training.archive.label_volumes import LabelPair, read_pair
from training.config import load_train_config
from training.segmentation.fit import train_segmentation
from training.segmentation.workflow import evaluate_package, result_lines, train_and_package
from training.tasks import workflow

from .conftest import ARCHIVE


def test_resumed_training_equals_the_uninterrupted_run(
    tiny_config_file: Path, tmp_path: Path
) -> None:
    config = load_train_config(tiny_config_file)
    whole = train_segmentation(config, tmp_path / "whole", progress=False)
    first = train_segmentation(config, tmp_path / "split", progress=False, epochs_this_call=1)
    assert first.steps == 2
    resumed = train_segmentation(config, tmp_path / "split", progress=False)
    assert resumed.steps == whole.steps == 4
    assert resumed.epochs_run == 1
    a, b = whole.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "split" / "train_log.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in log.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (tmp_path / "split" / "train_log.csv").read_text().count("\n") == 3
    # The second epoch moved the weights, so equality above is not that of two idle runs.
    assert not all(torch.equal(a[k], first.network.state_dict()[k]) for k in a)


def test_package_round_trip_gives_the_same_labels(tiny_config_file: Path, tmp_path: Path) -> None:
    config = load_train_config(tiny_config_file)
    assert workflow(config.task).__name__ == "training.segmentation.workflow"
    outcome = train_and_package(config, tmp_path / "models", tmp_path / "run", progress=False)
    assert outcome.package is not None
    package = outcome.package
    assert (package / "MODEL_CARD.md").is_file() and (package / "metrics.json").is_file()
    trained = train_segmentation(config, tmp_path / "run", progress=False)  # the checkpoint
    # The package stores float16 weights; its labels are those of the rounded weights.
    rounded = {
        k: v.half().float() if v.is_floating_point() else v
        for k, v in trained.network.state_dict().items()
    }
    trained.network.load_state_dict(rounded)
    item = read_pair(ARCHIVE, LabelPair("example_ct_sm.nii.gz", "example_seg.nii.gz"))
    expected = segment_volume(trained.network, config.model, item.volume)

    pipeline = load_pipeline(package, torch.device("cpu"))
    label_map = pipeline.read(item.volume, None)
    assert np.array_equal(label_map.labels, expected)
    assert label_map.labels.shape == item.volume.array.shape
    assert pipeline.algorithm.content_hash == outcome.content_hash
    assert pipeline.algorithm.task == "segmentation"
    assert [s.name for s in label_map.structures] == ["spleen", "liver", "vertebrae_T12"]

    results = evaluate_package(package, ARCHIVE, "train")
    names = [r["name"] for r in results["volumes"][0]["structures"]]
    assert "liver" in names
    assert results["package"]["content_hash"] == outcome.content_hash
    assert any("liver" in line for line in result_lines(results))
    with pytest.raises(ValueError, match="--split 'valid'"):
        evaluate_package(package, ARCHIVE, "valid")

    (package / "structures.toml").write_text("# altered\n", encoding="utf-8")
    with pytest.raises(PackageError, match=r"structures\.toml"):
        load_segmentation_package(package)


def test_a_package_of_another_task_is_refused(tiny_config_file: Path, tmp_path: Path) -> None:
    findings = Path(__file__).resolve().parents[3] / "models" / "findings-cxr-covid-tiny"
    if not findings.is_dir():
        pytest.skip("committed findings package not present")
    with pytest.raises(PackageError, match=r"not a segmentation package|does not list"):
        load_segmentation_package(findings)


def test_max_steps_stops_training(tiny_config_file: Path, tmp_path: Path) -> None:
    config = load_train_config(tiny_config_file)
    config = replace(config, optim=replace(config.optim, max_steps=3))
    assert train_segmentation(config, tmp_path / "run", progress=False).steps == 3
