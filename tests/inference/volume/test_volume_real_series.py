"""Every real series in shared/data/dicom-series against its reference NIfTI, and the failures."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_compare import assert_matches_nifti, reference_in_our_layout

from inference.volume import Volume3D, VolumeError, find_series, rebuild_series

# Collection needs the folder before fixtures run; the tests still skip through ``shared_data``.
SHARED_DATA = (Path(__file__).resolve().parents[3] / ".." / "shared" / "data").resolve()
SERIES_ROOT = SHARED_DATA / "dicom-series"


def _valid_series() -> list[Path]:
    if not SERIES_ROOT.is_dir():
        return [SERIES_ROOT]  # one case, skipped by the shared_data fixture with its reason
    return sorted(
        p
        for p in SERIES_ROOT.glob("*/*/*")
        if p.is_dir() and "failing" not in p.parts and any(p.iterdir())
    )


def _rebuild(folder: Path, **options: object) -> Volume3D:
    series = find_series(folder)
    assert len(series) == 1, f"{folder} holds {len(series)} series"
    (files,) = series.values()
    result = rebuild_series(files, **options)  # type: ignore[arg-type]
    assert isinstance(result, Volume3D)
    return result


@pytest.mark.parametrize("folder", _valid_series(), ids=lambda p: str(p.relative_to(SERIES_ROOT)))
def test_series_matches_its_reference_nifti(shared_data: Path, folder: Path) -> None:
    volume = _rebuild(folder)
    references = sorted(folder.parent.glob(f"{folder.name}_ground_truth*.nii.gz"))
    assert references, f"no reference NIfTI beside {folder}"
    exact = np.issubdtype(volume.array.dtype, np.integer)
    for reference in references:
        assert_matches_nifti(volume, str(reference), exact=exact)
    assert len(volume.source_sop_instance_uids) == volume.array.shape[0]


def test_valid_series_are_found(shared_data: Path) -> None:
    assert len(_valid_series()) >= 14


def test_gantry_tilt_is_refused_with_its_angle(shared_data: Path) -> None:
    with pytest.raises(VolumeError, match=r"gantry tilt of 14\.0 degrees"):
        _rebuild(SERIES_ROOT / "failing" / "gantrytilting" / "001")


def test_gantry_tilt_resampled_on_request_is_orthogonal(shared_data: Path) -> None:
    volume = _rebuild(SERIES_ROOT / "failing" / "gantrytilting" / "001", tilt="resample")
    directions = volume.affine[:3, :3] / np.array(volume.spacing)
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-9)
    assert volume.array.shape[0] == 4
    # The first slice is the reference plane: it is not moved.
    assert volume.array.dtype == np.float32


def test_not_a_volume_names_the_repeated_position(shared_data: Path) -> None:
    with pytest.raises(VolumeError, match=r"4 slices share one position"):
        _rebuild(SERIES_ROOT / "failing" / "notavolume" / "001")


def test_jpeg2000_ct_matches_the_segmentation_grid(shared_data: Path) -> None:
    folder = shared_data / "ct-totalsegmentator" / "example_ct_dicom"
    volume = _rebuild(folder)
    assert volume.array.shape == (20, 512, 512)
    assert volume.array.dtype == np.int16  # Hounsfield units, rescaled, still integers
    assert volume.array.min() == -1024
    seg = nib.load(folder.parent / "example_seg_dicom.nii.gz")
    # Asserts every voxel centre within 0.01 mm; the rows run the other way in the NIfTI.
    assert list(reference_in_our_layout(volume, seg)) == [3, -2, 1]


def test_anonymised_series_without_uids_keeps_file_meta_uids(shared_data: Path) -> None:
    volume = _rebuild(shared_data / "ct-totalsegmentator" / "example_ct_dicom")
    assert all(uid.startswith("1.3.12.2") for uid in volume.source_sop_instance_uids)
    assert len(set(volume.source_sop_instance_uids)) == 20
