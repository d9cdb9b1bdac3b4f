"""Label volumes: pairs read on one grid (NIfTI, DICOM folder, DICOM SEG), grid mismatches
named, and the label catalogue checked against TotalSegmentator's shared label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from inference.dicom_out.seg import build_segmentation
from inference.dicom_out.structures import load_structures
from inference.results import AlgorithmIdentity, LabelMap
from inference.volume import Volume3D, rebuild_series
from tests.ct_example import repaired_example_ct
from training.archive.label_volumes import (
    LabelledVolume,
    LabelPair,
    LabelVolumeError,
    read_labels,
    read_pair,
)

from .conftest import ARCHIVE, CATALOGUE

TRAIN = LabelPair("example_ct_sm.nii.gz", "example_seg.nii.gz")
DICOM = LabelPair("example_ct_dicom", "example_seg_dicom.nii.gz")


@pytest.fixture(scope="module")
def pairs() -> dict[str, LabelledVolume]:
    if not ARCHIVE.is_dir():
        pytest.skip(f"shared data not found at {ARCHIVE} (see shared/data/README.md)")
    return {"train": read_pair(ARCHIVE, TRAIN), "dicom": read_pair(ARCHIVE, DICOM)}


def centroid(item: LabelledVolume, name: str) -> np.ndarray:
    """The centre of a structure in LPS mm (x grows to the patient's left, z upwards)."""
    label = {s.name: s.label for s in load_structures(CATALOGUE).values()}[name]
    return np.asarray(item.volume.voxel_to_world(np.argwhere(item.labels == label)).mean(axis=0))


def test_every_shared_label_id_is_in_the_catalogue(pairs: dict[str, LabelledVolume]) -> None:
    catalogue = load_structures(CATALOGUE)
    for item in pairs.values():
        ids = {int(v) for v in np.unique(item.labels) if v}
        assert ids, item.labels_file
        assert ids <= set(catalogue), f"{item.labels_file}: {sorted(ids - set(catalogue))}"
    assert len(catalogue) == 117


@pytest.mark.parametrize("which", ["train", "dicom"])
def test_organs_sit_where_they_should(pairs: dict[str, LabelledVolume], which: str) -> None:
    item = pairs[which]
    counts = np.bincount(item.labels.ravel())
    assert int(np.argmax(counts[1:])) + 1 == 5  # the liver is the largest structure
    liver, spleen = centroid(item, "liver"), centroid(item, "spleen")
    assert liver[0] < spleen[0] - 80  # liver on the patient's right, spleen on the left
    aorta, cava = centroid(item, "aorta"), centroid(item, "inferior_vena_cava")
    assert aorta[0] > cava[0]  # the aorta runs left of the vena cava
    spine = centroid(item, "vertebrae_T12")
    assert spine[1] > liver[1]  # the spine lies behind (posterior, +y) the liver's centre
    if which == "train":  # the 3 mm volume reaches down to the kidneys, below the liver
        assert centroid(item, "kidney_right")[2] < liver[2]


def test_dicom_image_is_rebuilt_and_labels_follow_its_grid(
    pairs: dict[str, LabelledVolume],
) -> None:
    item = pairs["dicom"]
    assert item.volume.array.shape == item.labels.shape == (20, 512, 512)
    assert item.volume.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert item.volume.series.modality == "CT"
    assert pairs["train"].volume.spacing == pytest.approx((3.0, 3.0, 3.0))


def test_a_label_map_off_the_image_grid_names_both_files(
    pairs: dict[str, LabelledVolume],
) -> None:
    image = ARCHIVE / DICOM.image
    with pytest.raises(LabelVolumeError) as error:
        read_labels(ARCHIVE / TRAIN.labels, pairs["dicom"].volume, image)
    assert "example_seg.nii.gz" in str(error.value) and "example_ct_dicom" in str(error.value)


def test_a_dicom_seg_is_read_as_labels(pairs: dict[str, LabelledVolume], tmp_path: Path) -> None:
    files = repaired_example_ct(tmp_path / "ct", ARCHIVE.parent)
    volume = rebuild_series(files, workers=1)
    assert isinstance(volume, Volume3D)
    reference = pairs["dicom"].labels
    algorithm = AlgorithmIdentity("TotalSegmentator", "2", "ab" * 32, "segmentation")
    structures = tuple(load_structures(CATALOGUE).values())
    seg, _ = build_segmentation(
        [pydicom.dcmread(f, stop_before_pixels=True) for f in files],
        LabelMap(reference, volume, structures, algorithm),
        series_instance_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
    )
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    item = read_pair(tmp_path, LabelPair("ct", "seg.dcm"))
    assert np.array_equal(item.labels, reference)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "labels.nii.gz").write_bytes(b"not nifti")
    (tmp_path / "image.txt").write_text("x", encoding="utf-8")
    with pytest.raises(LabelVolumeError, match=r"image\.txt"):
        read_pair(tmp_path, LabelPair("image.txt", "labels.nii.gz"))
    if ARCHIVE.is_dir():
        with pytest.raises(LabelVolumeError, match=r"labels\.nii\.gz"):
            read_labels(tmp_path / "labels.nii.gz", read_pair(ARCHIVE, TRAIN).volume, ARCHIVE)
