"""A :class:`Volume3D` as a NIfTI-1 image (RAS, ``[column, row, slice]``), built in memory.

NIfTI indexes ``(i, j, k)`` and maps to RAS; the volume indexes ``(slice, row, column)`` and
maps to LPS. Writing the image to disk is the caller's business (the ``vlnode volume``
command), not this package's.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from inference.volume.types import Volume3D

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# (i, j, k, 1) = (column, row, slice, 1)  ->  (slice, row, column, 1)
_SLICE_ROW_COLUMN_FROM_IJK = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64
)
_RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def to_nifti(volume: Volume3D) -> nib.Nifti1Image:
    """The volume as a NIfTI-1 image with the same voxel values and world coordinates."""
    data = np.ascontiguousarray(np.swapaxes(volume.array, 0, 2))  # [column, row, slice, ...]
    if data.ndim == 4:  # RGB: NIfTI stores it as one structured voxel type
        data = np.ascontiguousarray(data.astype(np.uint8)).view(_RGB)[..., 0]
    affine = RAS_FROM_LPS @ volume.affine @ _SLICE_ROW_COLUMN_FROM_IJK
    image = nib.Nifti1Image(data, affine)  # type: ignore[no-untyped-call]
    image.header.set_xyzt_units("mm")  # type: ignore[no-untyped-call]
    image.set_qform(affine, code=1)  # type: ignore[no-untyped-call]  # scanner anatomical
    image.set_sform(affine, code=1)  # type: ignore[no-untyped-call]
    return image
