"""Cross-sectional series built on the fly: ordering, stacks, and every geometry refusal."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from volume_factory import ct_slice, ct_stack, write

from inference.volume import Volume3D, VolumeError, rebuild_series


def _volume(files: list[Path], **options: object) -> Volume3D:
    result = rebuild_series(files, **options)  # type: ignore[arg-type]
    assert isinstance(result, Volume3D)
    return result


def test_shuffled_files_are_ordered_by_position_not_name_or_number(tmp_path: Path) -> None:
    datasets, values = ct_stack(12)
    order = np.random.default_rng(7).permutation(12)
    shuffled = [datasets[k] for k in order]
    for number, ds in enumerate(shuffled):
        ds.InstanceNumber = 100 - number  # misleading on purpose
    files = write(shuffled, tmp_path, names=[f"{k:03d}.dcm" for k in range(12)])
    volume = _volume(list(reversed(files)))
    np.testing.assert_array_equal(volume.array, values.astype(np.int32) - 1024)
    assert volume.source_sop_instance_uids == tuple(ds.SOPInstanceUID for ds in datasets)
    np.testing.assert_allclose(volume.affine[:3, 3], [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(volume.spacing, (2.0, 0.5, 0.75))
    # slice 11, row 5, column 4 is at origin + 11 * 2 mm in z, 5 * 0.5 in y, 4 * 0.75 in x.
    np.testing.assert_allclose(volume.voxel_to_world([11, 5, 4]), [-7.0, -17.5, 52.0])


def test_rescaled_ct_stays_int16_hounsfield_units(tmp_path: Path) -> None:
    datasets, values = ct_stack(3)
    volume = _volume(write(datasets, tmp_path))
    assert volume.array.dtype == np.int16
    assert volume.array.min() == int(values.min()) - 1024


def test_per_slice_slopes_give_float_values(tmp_path: Path) -> None:
    datasets, values = ct_stack(3)
    for k, ds in enumerate(datasets):
        ds.RescaleSlope, ds.RescaleIntercept = 0.5 * (k + 1), 10.0
    volume = _volume(write(datasets, tmp_path))
    assert volume.array.dtype == np.float32
    expected = values * (0.5 * np.arange(1, 4))[:, None, None] + 10.0
    np.testing.assert_allclose(volume.array, expected, rtol=1e-6)


def test_missing_slice_is_named(tmp_path: Path) -> None:
    datasets, _ = ct_stack(10)
    del datasets[5]
    with pytest.raises(VolumeError, match=r"1 missing slice between slice 4 and 5 \(gap of 4\.00"):
        rebuild_series(write(datasets, tmp_path))


def test_inconsistent_spacing_is_named(tmp_path: Path) -> None:
    datasets, _ = ct_stack(10)
    for ds in datasets[7:]:
        ds.ImagePositionPatient = [
            ds.ImagePositionPatient[0],
            ds.ImagePositionPatient[1],
            ds.ImagePositionPatient[2] + 3.0,
        ]
    with pytest.raises(VolumeError, match=r"inconsistent spacing of 5\.00 vs 2\.00 mm at slice 7"):
        rebuild_series(write(datasets, tmp_path))


def test_slice_off_the_line_is_refused(tmp_path: Path) -> None:
    datasets, _ = ct_stack(6)
    position = list(datasets[3].ImagePositionPatient)
    datasets[3].ImagePositionPatient = [position[0] + 1.5, position[1], position[2]]
    with pytest.raises(VolumeError, match=r"slice 3 is 1\.\d+ mm off the line"):
        rebuild_series(write(datasets, tmp_path))


def test_localizer_in_the_series_is_left_aside_and_named(tmp_path: Path) -> None:
    datasets, values = ct_stack(8)
    localizer = ct_slice(
        values[0],
        (0.0, 0.0, 0.0),
        series_uid=datasets[0].SeriesInstanceUID,
        orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    volume = _volume(write([localizer, *datasets], tmp_path))
    assert volume.array.shape == (8, 6, 5)
    assert len(volume.other_stacks) == 1
    assert "1 slice ORIGINAL\\PRIMARY\\LOCALIZER" in volume.other_stacks[0]


def test_two_equal_stacks_in_two_orientations_are_refused(tmp_path: Path) -> None:
    series = generate_uid()
    axial, _ = ct_stack(4, series_uid=series)
    coronal, _ = ct_stack(
        4, series_uid=series, orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0), step=(0.0, 2.0, 0.0)
    )
    with pytest.raises(VolumeError, match=r"2 orientations with 4 slices each"):
        rebuild_series(write([*axial, *coronal], tmp_path))


def test_repeated_positions_are_not_a_volume(tmp_path: Path) -> None:
    datasets, _ = ct_stack(6, step=(0.0, 0.0, 0.0))
    with pytest.raises(VolumeError, match=r"6 slices share one position"):
        rebuild_series(write(datasets, tmp_path))


def test_one_duplicated_position_is_named(tmp_path: Path) -> None:
    datasets, _ = ct_stack(6)
    datasets[4].ImagePositionPatient = datasets[3].ImagePositionPatient
    with pytest.raises(VolumeError, match=r"2 slices share one position \(first at slice 3\)"):
        rebuild_series(write(datasets, tmp_path))


def test_same_instance_twice_counts_once(tmp_path: Path) -> None:
    datasets, _ = ct_stack(4)
    files = write(datasets, tmp_path / "a") + write(datasets[:2], tmp_path / "b")
    assert _volume(files).array.shape[0] == 4


def test_files_of_two_series_are_refused(tmp_path: Path) -> None:
    first, _ = ct_stack(3)
    second, _ = ct_stack(3)
    with pytest.raises(VolumeError, match=r"belong to 2 series"):
        rebuild_series(write([*first, *second], tmp_path))


def test_no_pixel_data_is_named(tmp_path: Path) -> None:
    datasets, _ = ct_stack(2)
    del datasets[1].PixelData
    with pytest.raises(VolumeError, match=r"no pixel data"):
        rebuild_series(write(datasets, tmp_path))


def test_not_dicom_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(VolumeError, match=r"notes\.txt: not a readable DICOM file"):
        rebuild_series([path])


def test_signed_12_bit_values_are_sign_extended(tmp_path: Path) -> None:
    stored = np.array([[-5, 7], [-2048, 2047]], dtype=np.int16)
    raw = (stored.view(np.uint16) & 0x0FFF).view(np.int16)  # high bits left at zero on disk
    ds = ct_slice(raw, (0, 0, 0), series_uid=generate_uid(), rescale=None)
    ds.PixelRepresentation = 1
    volume = _volume(write([ds], tmp_path))
    np.testing.assert_array_equal(volume.array[0], stored)


def test_unused_high_bits_are_masked(tmp_path: Path) -> None:
    stored = np.array([[5, 4095]], dtype=np.uint16)
    ds = ct_slice(stored | 0xF000, (0, 0, 0), series_uid=generate_uid(), rescale=None)
    volume = _volume(write([ds], tmp_path))
    np.testing.assert_array_equal(volume.array[0], stored)


def test_second_echo_is_left_aside_and_named(tmp_path: Path) -> None:
    series = generate_uid()
    first, _ = ct_stack(5, series_uid=series)
    second, _ = ct_stack(5, series_uid=series)
    for ds in first:
        ds.EchoNumbers = 1
    for ds in second:
        ds.EchoNumbers = 2
    volume = _volume(write([*second, *first], tmp_path))
    assert volume.source_sop_instance_uids == tuple(ds.SOPInstanceUID for ds in first)
    assert volume.other_stacks and "echo 2" in volume.other_stacks[0]


def test_time_points_are_separate_stacks(tmp_path: Path) -> None:
    series = generate_uid()
    stacks = [ct_stack(4, series_uid=series)[0] for _ in range(3)]
    for time, stack in enumerate(stacks, start=1):
        for ds in stack:
            ds.TemporalPositionIdentifier = time
    volume = _volume(write([ds for stack in reversed(stacks) for ds in stack], tmp_path))
    assert volume.source_sop_instance_uids == tuple(ds.SOPInstanceUID for ds in stacks[0])
    assert len(volume.other_stacks) == 2
    assert "time 2" in volume.other_stacks[0] or "time 2" in volume.other_stacks[1]
    assert "time 3" in volume.other_stacks[0] or "time 3" in volume.other_stacks[1]


def test_one_slice_turned_a_little_is_an_inconsistent_orientation(tmp_path: Path) -> None:
    datasets, _ = ct_stack(6)
    angle = np.radians(2.0)
    datasets[2].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, np.cos(angle), np.sin(angle)]
    with pytest.raises(VolumeError, match=r"2 orientations 2\.00 degrees apart in one stack"):
        rebuild_series(write(datasets, tmp_path))


def test_slightly_sheared_stack_keeps_its_exact_affine(tmp_path: Path) -> None:
    # 1 degree off the normal: under the tilt tolerance, so no resampling and no refusal.
    shift = 2.0 * np.tan(np.radians(1.0))
    datasets, values = ct_stack(5, step=(0.0, shift, 2.0))
    volume = _volume(write(datasets, tmp_path))
    np.testing.assert_array_equal(volume.array, values.astype(np.int32) - 1024)
    for k, ds in enumerate(datasets):
        np.testing.assert_allclose(volume.voxel_to_world([k, 0, 0]), ds.ImagePositionPatient)


def test_a_slice_stored_twice_under_two_uids_is_kept_once(tmp_path: Path) -> None:
    datasets, values = ct_stack(5)
    twin = copy.deepcopy(datasets[2])
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    volume = _volume(write([*datasets, twin], tmp_path))
    np.testing.assert_array_equal(volume.array, values.astype(np.int32) - 1024)
    assert any("1 repeated slice" in other for other in volume.other_stacks)
