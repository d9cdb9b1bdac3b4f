"""Labels on the model grid back onto the source volume's grid, by nearest neighbour.

Labels are integers by then (argmax first): interpolating them, or the logits, between grids
would invent labels at borders. Each source voxel centre is taken to world coordinates with
the source affine and into the model grid with the model's, so any orientation, obliquity or
anisotropy of the source comes back exactly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.volume.nifti import RAS_FROM_LPS
from inference.volume.types import Volume3D


def labels_on_source_grid(
    labels: npt.NDArray[np.integer],
    model_affine: npt.NDArray[np.float64],
    volume: Volume3D,
) -> npt.NDArray[np.integer]:
    """``labels`` (``[x, y, z]``, RAS ``model_affine``) at each voxel of ``volume``.

    Returns an array of ``volume.array.shape[:3]`` and ``labels``' dtype; voxels whose centre
    falls outside the model grid read 0.
    """
    # (slice, row, column, 1) of the source -> (x, y, z, 1) of the model grid.
    to_model = np.linalg.inv(model_affine) @ RAS_FROM_LPS @ volume.affine
    shape = volume.array.shape[:3]
    rows, columns = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    plane = np.stack([rows.ravel(), columns.ravel()], axis=1).astype(np.float64)
    bounds = np.array(labels.shape[:3])
    out = np.zeros(shape, dtype=labels.dtype)
    for s in range(shape[0]):  # one slice at a time: memory stays that of one plane
        xyz = plane @ to_model[:3, 1:3].T + (to_model[:3, 0] * s + to_model[:3, 3])
        nearest = np.rint(xyz).astype(np.int64)
        inside = np.all((nearest >= 0) & (nearest < bounds), axis=1)
        values = np.zeros(len(nearest), dtype=labels.dtype)
        values[inside] = labels[tuple(nearest[inside].T)]
        out[s] = values.reshape(shape[1], shape[2])
    return out
