"""Compare a rebuilt volume with a reference NIfTI by values and world coordinates.

NIfTI affines map (i, j, k) to RAS millimetres; ours map (slice, row, column) to LPS. The
comparison goes through world space, so it holds whatever the reference's axis order. Both
grids are affine, so the distance between matching voxel centres is an affine function of
the index and is largest at a corner: checking the eight corners checks every voxel.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt

from inference.volume import Volume3D

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def reference_in_our_layout(
    volume: Volume3D, image: nib.Nifti1Image, tolerance_mm: float = 0.01
) -> npt.NDArray[np.int64]:
    """For each of our axes, the reference axis it runs along, signed (+1-based, - flipped).

    Asserts that every reference voxel centre is one of ours within ``tolerance_mm`` and
    that both grids have the same voxels.
    """
    shape = image.shape[:3]
    ours = volume.array.shape[:3]
    reference_affine = LPS_FROM_RAS @ image.affine
    mapping = np.linalg.inv(volume.affine) @ reference_affine  # reference ijk -> our index
    linear, offset = np.rint(mapping[:3, :3]), np.rint(mapping[:3, 3])
    for corner in itertools.product(*[(0, n - 1) for n in shape]):
        ijk = np.asarray(corner, dtype=np.float64)
        expected = reference_affine[:3, :3] @ ijk + reference_affine[:3, 3]
        got = volume.voxel_to_world(linear @ ijk + offset)
        distance = float(np.linalg.norm(got - expected))
        assert distance <= tolerance_mm, f"corner {corner} is {distance:.4f} mm off"
    assert sorted(np.abs(linear).sum(axis=0)) == [1, 1, 1], f"not a permutation: {linear}"
    axes = np.argmax(np.abs(linear), axis=1)  # reference axis of each of our axes
    signs = linear[np.arange(3), axes]
    for axis in range(3):
        assert ours[axis] == shape[axes[axis]], f"shapes {ours} and {shape} differ"
        assert offset[axis] == (0 if signs[axis] > 0 else ours[axis] - 1), "grids are shifted"
    signed: npt.NDArray[np.int64] = ((axes + 1) * signs).astype(np.int64)
    return signed


def reference_as_ours(volume: Volume3D, image: nib.Nifti1Image) -> Any:
    """The reference's voxel values rearranged into our ``[slice, row, column]`` layout."""
    signed = reference_in_our_layout(volume, image)
    data = np.asanyarray(image.dataobj)
    data = data.transpose(*[abs(int(a)) - 1 for a in signed], *range(3, data.ndim))
    flips = tuple(slice(None, None, -1) if a < 0 else slice(None) for a in signed)
    return data[flips]


def assert_matches_nifti(volume: Volume3D, path: str, *, exact: bool) -> None:
    """Every voxel of the reference: same world position (0.01 mm) and the same value."""
    reference = reference_as_ours(volume, cast(nib.Nifti1Image, nib.load(path)))
    if reference.dtype.names:  # RGB(A) NIfTI: a structured type with one field per channel
        for channel, name in enumerate(("R", "G", "B")):
            np.testing.assert_array_equal(volume.array[..., channel], reference[name])
    elif exact:
        np.testing.assert_array_equal(volume.array, reference)
    else:
        np.testing.assert_allclose(np.asarray(volume.array), reference, rtol=1e-5, atol=1e-5)
