"""The committed package models/segmentation-ct-tiny: it loads, hash-checked, and segments the
real 20-slice DICOM CT, read as stored, with the liver its card reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.pipelines.segmentation import load_pipeline
from inference.volume import Volume3D, find_series, rebuild_series
from tests.conftest import REPO, SHARED_DATA
from training.archive.label_volumes import read_labels

PACKAGE = REPO / "models" / "segmentation-ct-tiny"
ARCHIVE = SHARED_DATA / "ct-totalsegmentator"
LIVER = 5


def test_committed_package_segments_the_dicom_ct() -> None:
    if not ARCHIVE.is_dir():
        pytest.skip(f"shared data not found at {ARCHIVE} (see shared/data/README.md)")
    pipeline = load_pipeline(PACKAGE, torch.device("cpu"))
    assert pipeline.algorithm.name == "segmentation-ct-tiny"
    assert len(pipeline.model.structures) == 40
    files = next(iter(find_series(ARCHIVE / "example_ct_dicom").values()))
    volume = rebuild_series(files, workers=1)
    assert isinstance(volume, Volume3D)
    label_map = pipeline.read(volume, (40.0, 400.0))
    assert label_map.labels.shape == volume.array.shape
    reference = read_labels(ARCHIVE / "example_seg_dicom.nii.gz", volume, Path("example_ct_dicom"))
    found, truth = label_map.labels == LIVER, reference == LIVER
    dice = 2 * np.sum(found & truth) / (np.sum(found) + np.sum(truth))
    assert dice == pytest.approx(0.778, abs=0.002)  # the card's figure
