"""Uncompressed pixel data in its less common layouts: read as pydicom would decode it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from volume_factory import ct_slice, ct_stack, write

from inference.volume import Volume3D, VolumeError, rebuild_series


def _volume(files: list[Path]) -> Volume3D:
    result = rebuild_series(files)
    assert isinstance(result, Volume3D)
    return result


def test_elements_after_pixel_data_are_found_by_parsing(tmp_path: Path) -> None:
    datasets, values = ct_stack(3)
    for ds in datasets:
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64)  # Data Set Trailing Padding
    volume = _volume(write(datasets, tmp_path))
    np.testing.assert_array_equal(volume.array, values.astype(np.int32) - 1024)


def test_odd_sized_8_bit_frames_skip_the_pad_byte(tmp_path: Path) -> None:
    series = generate_uid()
    frames = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    datasets = []
    for k in range(2):
        ds = ct_slice(frames[k], (0.0, 0.0, 2.0 * k), series_uid=series, rescale=None)
        ds.BitsStored, ds.HighBit = 8, 7
        ds.PixelData = frames[k].tobytes() + b"\x00"  # even length, as the standard requires
        datasets.append(ds)
    volume = _volume(write(datasets, tmp_path))
    np.testing.assert_array_equal(volume.array, frames)


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb_is_read_sample_last(tmp_path: Path, planar: int) -> None:
    series = generate_uid()
    rgb = np.arange(2 * 4 * 3 * 3, dtype=np.uint8).reshape(2, 4, 3, 3)
    datasets = []
    for k in range(2):
        ds = ct_slice(rgb[k, ..., 0], (0.0, 0.0, 2.0 * k), series_uid=series, rescale=None)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.BitsStored, ds.HighBit = 8, 7
        ds.PlanarConfiguration = planar
        stored = rgb[k] if planar == 0 else np.moveaxis(rgb[k], -1, 0)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        datasets.append(ds)
    volume = _volume(write(datasets, tmp_path))
    np.testing.assert_array_equal(volume.array, rgb)


def test_truncated_pixel_data_is_named(tmp_path: Path) -> None:
    datasets, _ = ct_stack(2)
    datasets[1].PixelData = datasets[1].PixelData[:-20]
    with pytest.raises(VolumeError, match=r"bytes of pixel data where Rows x Columns"):
        rebuild_series(write(datasets, tmp_path))


def test_a_slice_of_another_matrix_size_is_another_stack(tmp_path: Path) -> None:
    datasets, _ = ct_stack(3)
    small = ct_slice(
        np.zeros((3, 3), dtype=np.uint16),
        (0.0, 0.0, 100.0),
        series_uid=datasets[0].SeriesInstanceUID,
    )
    volume = _volume(write([*datasets, small], tmp_path))
    assert volume.array.shape == (3, 6, 5)
    assert len(volume.other_stacks) == 1 and volume.other_stacks[0].startswith("1 slice")
