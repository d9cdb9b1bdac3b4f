"""Resample a gantry-tilted (sheared) stack onto the orthogonal grid of its own planes.

Each tilted slice is a plane of the orthogonal grid, only shifted within that plane; so the
orthogonal grid's slice ``k`` is slice ``k`` shifted back by ``k`` times the in-plane part of
the slice step. The shift is applied as two 1-D linear interpolations (rows, then columns) over
the whole array at once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def resample_tilted(
    values: npt.NDArray[np.integer] | npt.NDArray[np.floating], affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Return the stack on an orthogonal grid, and that grid's affine.

    Parameters
    ----------
    values
        ``[slice, row, column]`` array on the sheared grid described by ``affine``.
    affine
        4x4 matrix from ``(slice, row, column, 1)`` to LPS mm; its slice column is the real
        slice step (not along the normal) and its row and column columns are orthogonal.

    Returns
    -------
    The resampled ``float32`` array (voxels that fall outside the acquired field of view take
    the array's minimum) and the new affine, whose slice column is along the normal.
    """
    step, down, across = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    normal = np.cross(across, down)
    normal /= np.linalg.norm(normal)
    orthogonal_step = normal * float(step @ normal)
    in_plane = step - orthogonal_step
    slices = np.arange(values.shape[0], dtype=np.float64)
    # Slice k of the tilted stack sits k * in_plane further than the orthogonal grid's slice
    # k, so the orthogonal voxel (k, r, c) reads the tilted slice k at r and c minus that.
    row_shift = -slices * float(in_plane @ down) / float(down @ down)
    column_shift = -slices * float(in_plane @ across) / float(across @ across)

    fill = float(values.min()) if values.size else 0.0
    out = _shift_axis(values.astype(np.float32), row_shift, axis=1, fill=fill)
    out = _shift_axis(out, column_shift, axis=2, fill=fill)
    new_affine = affine.copy()
    new_affine[:3, 0] = orthogonal_step
    return out, new_affine


def _shift_axis(
    values: npt.NDArray[np.float32],
    shift: npt.NDArray[np.float64],
    axis: int,
    fill: float,
) -> npt.NDArray[np.float32]:
    """``out[k, ..., i, ...] = values[k, ..., i + shift[k], ...]``, linearly interpolated."""
    if not np.any(shift):
        return values
    length = values.shape[axis]
    shape = [values.shape[0], 1, 1]
    shape[axis] = length
    source = np.arange(length)[None, :] + shift[:, None]  # (slice, position along axis)
    low = np.floor(source)
    weight = (source - low).astype(np.float32)
    low_index = low.astype(np.intp)
    valid = (source >= 0) & (source <= length - 1)
    lower = np.take_along_axis(values, np.clip(low_index, 0, length - 1).reshape(shape), axis)
    upper = np.take_along_axis(values, np.clip(low_index + 1, 0, length - 1).reshape(shape), axis)
    weight_shape = weight.reshape(shape)
    out: npt.NDArray[np.float32] = lower * (1 - weight_shape) + upper * weight_shape
    np.putmask(out, ~np.broadcast_to(valid.reshape(shape), out.shape), np.float32(fill))
    return out
