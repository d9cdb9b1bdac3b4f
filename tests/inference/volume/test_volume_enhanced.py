"""Enhanced multi-frame CT built on the fly: per-frame positions, shared groups, frame order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from volume_factory import enhanced_ct, write

from inference.volume import Volume3D, VolumeError, rebuild_series


def test_frames_are_ordered_by_position_with_their_frame_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 4096, size=(7, 4, 6), dtype=np.uint16)
    order = rng.permutation(7)  # frame f of the file is slice order[f] of the volume
    positions = [(5.0, -3.0, 10.0 + 1.5 * order[f]) for f in range(7)]
    stored = np.empty_like(values)
    stored[np.arange(7)] = values[order]
    ds = enhanced_ct(stored, positions, spacing=(0.8, 0.6), rescale=(1.0, -1000.0))
    result = rebuild_series(write([ds], tmp_path))
    assert isinstance(result, Volume3D)
    np.testing.assert_array_equal(result.array, values.astype(np.int32) - 1000)
    assert result.array.dtype == np.int16
    inverse = np.argsort(order)  # the file frame holding slice k
    assert result.source_frame_numbers == tuple(int(f) + 1 for f in inverse)
    assert set(result.source_sop_instance_uids) == {ds.SOPInstanceUID}
    np.testing.assert_allclose(result.spacing, (1.5, 0.8, 0.6))
    np.testing.assert_allclose(result.affine[:3, 3], (5.0, -3.0, 10.0))


def test_frame_without_position_is_named(tmp_path: Path) -> None:
    values = np.zeros((3, 2, 2), dtype=np.uint16)
    ds = enhanced_ct(values, [(0, 0, 0), (0, 0, 1), (0, 0, 2)])
    del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    with pytest.raises(VolumeError, match=r"frame 2 has no ImagePositionPatient"):
        rebuild_series(write([ds], tmp_path))


def test_compressed_enhanced_frames_are_decoded_in_order(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    rng = np.random.default_rng(5)
    values = rng.integers(0, 4096, size=(4, 8, 8), dtype=np.uint16)
    ds = enhanced_ct(values[::-1].copy(), [(0.0, 0.0, 3.0 - k) for k in range(4)])
    ds.compress(RLELossless)
    result = rebuild_series(write([ds], tmp_path))
    assert isinstance(result, Volume3D)
    np.testing.assert_array_equal(result.array, values.astype(np.int32) - 1024)


def test_geometry_outside_the_functional_groups_is_used(tmp_path: Path) -> None:
    values = np.arange(3 * 2 * 2, dtype=np.uint16).reshape(3, 2, 2)
    ds = enhanced_ct(values, [(0.0, 0.0, 2.0 * k) for k in range(3)])
    shared = ds.SharedFunctionalGroupsSequence[0]
    del shared.PlaneOrientationSequence
    del shared.PixelMeasuresSequence
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]  # where some writers leave them
    ds.PixelSpacing = [0.9, 0.8]
    result = rebuild_series(write([ds], tmp_path))
    assert isinstance(result, Volume3D)
    np.testing.assert_allclose(result.spacing, (2.0, 0.9, 0.8))
