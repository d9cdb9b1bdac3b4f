"""Gantry tilt built on the fly: refused with its angle, or resampled at the right places."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from volume_factory import ct_slice, write

from inference.volume import Volume3D, VolumeError, rebuild_series

TILT = np.radians(20.0)
ROW_COSINE = np.array([1.0, 0.0, 0.0])
COLUMN_COSINE = np.array([0.0, np.cos(TILT), -np.sin(TILT)])
ORIGIN = np.array([-5.0, -8.0, 12.0])
STEP = np.array([0.0, 0.0, 3.0])  # the table moves along z; the planes are tilted
ROWS, COLUMNS, SLICES = 40, 6, 5
ROW_SPACING, COLUMN_SPACING = 0.5, 0.75


def _tilted_series(folder: Path) -> list[Path]:
    # Stored value = 10 * row + column: linear, so linear interpolation reproduces it exactly.
    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    pixels = (10 * rows + columns + 100).astype(np.uint16)
    series = generate_uid()
    datasets = [
        ct_slice(
            pixels,
            ORIGIN + k * STEP,
            series_uid=series,
            orientation=(*ROW_COSINE, *COLUMN_COSINE),
            spacing=(ROW_SPACING, COLUMN_SPACING),
            rescale=None,
        )
        for k in range(SLICES)
    ]
    return write(datasets, folder)


def test_tilt_is_refused_by_default_with_its_angle(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match=r"gantry tilt of 20\.0 degrees"):
        rebuild_series(_tilted_series(tmp_path))


def test_resampled_tilt_puts_each_value_where_it_was_acquired(tmp_path: Path) -> None:
    volume = rebuild_series(_tilted_series(tmp_path), tilt="resample")
    assert isinstance(volume, Volume3D)
    assert volume.array.shape == (SLICES, ROWS, COLUMNS)
    directions = volume.affine[:3, :3] / np.array(volume.spacing)
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(volume.spacing[0], 3.0 * np.cos(TILT))

    # For every output voxel, find by least squares where it lies in the acquired slice.
    index = np.indices(volume.array.shape).reshape(3, -1).T
    world = volume.voxel_to_world(index)
    slice_origin = ORIGIN + index[:, :1] * STEP
    plane = np.stack([COLUMN_COSINE * ROW_SPACING, ROW_COSINE * COLUMN_SPACING], axis=1)
    row_column, *_ = np.linalg.lstsq(plane, (world - slice_origin).T, rcond=None)
    in_plane = slice_origin + (plane @ row_column).T
    np.testing.assert_allclose(in_plane, world, atol=1e-6)  # same plane as its source slice
    acquired_row, acquired_column = row_column
    np.testing.assert_allclose(acquired_column, index[:, 2], atol=1e-9)
    # Round-off decides voxels on the edge of the field of view either way: leave them out.
    inside = (acquired_row >= 1e-6) & (acquired_row <= ROWS - 1 - 1e-6)
    outside = (acquired_row < -1e-6) | (acquired_row > ROWS - 1 + 1e-6)
    expected = 10 * acquired_row + acquired_column + 100
    got = volume.array.reshape(-1)
    np.testing.assert_allclose(got[inside], expected[inside], atol=1e-3)
    assert np.all(got[outside] == 100)  # outside the field of view: the minimum
    assert outside.sum() > 0 and inside.sum() > 0


def test_unknown_policy_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tilt policy must be 'refuse' or 'resample'"):
        rebuild_series(_tilted_series(tmp_path), tilt="ignore")  # type: ignore[arg-type]
