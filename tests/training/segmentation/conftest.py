"""A tiny segmentation configuration on the shared TotalSegmentator example (skips without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import REPO, SHARED_DATA

ARCHIVE = SHARED_DATA / "ct-totalsegmentator"
CATALOGUE = REPO / "conf" / "segmentation" / "totalsegmentator-v2.toml"

TINY = """
task = "segmentation"
name = "segmentation-test-tiny"
catalogue = "{catalogue}"
[model]
network = "segresnet"
init_filters = 8
blocks_down = [1, 1]
blocks_up = [1]
spacing = [6.0, 6.0, 6.0]
roi_size = [16, 16, 8]
sw_batch_size = 4
[data]
archive = "{archive}"
structures = ["liver", "spleen", "vertebrae_T12"]
train_split = "train"
dev_split = "train"
[data.splits]
train = [{{ image = "example_ct_sm.nii.gz", labels = "example_seg.nii.gz" }}]
dicom = [{{ image = "example_ct_dicom", labels = "example_seg_dicom.nii.gz" }}]
[optim]
epochs = 2
steps_per_epoch = 2
batch_size = 2
lr = 1e-2
warmup_steps = 1
num_threads = 1
[augment]
flip_axes = [2]
"""


@pytest.fixture()
def tiny_config_file(tmp_path: Path) -> Path:
    if not ARCHIVE.is_dir():
        pytest.skip(f"shared data not found at {ARCHIVE} (see shared/data/README.md)")
    file = tmp_path / "tiny.toml"
    file.write_text(TINY.format(catalogue=CATALOGUE, archive=ARCHIVE), encoding="utf-8")
    return file
