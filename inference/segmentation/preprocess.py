"""A rebuilt CT volume as the network's input: canonical orientation, model spacing, HU scaling.

The same transforms serve training (image and label keys) and the node (image only), so a
package reads a hospital's series exactly as its training volumes were read. The volume enters
MONAI as NIfTI does (``[x, y, z]`` with a RAS affine, :func:`inference.volume.nifti.to_nifti`),
so MONAI's affine bookkeeping carries the world coordinates through every step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.compose import Compose
from monai.transforms.intensity.dictionary import ScaleIntensityRanged
from monai.transforms.spatial.dictionary import Orientationd, Spacingd

from inference.segmentation.config import SegmentationModelConfig
from inference.volume.nifti import RAS_FROM_LPS
from inference.volume.types import Volume3D, VolumeError

IMAGE = "image"
LABEL = "label"
CANONICAL_ORIENTATION = "RAS"
MIN_SLICES = 2


def check_readable(volume: Volume3D, config: SegmentationModelConfig) -> None:
    """Refuse, naming why, a volume this model cannot segment (colour, wrong modality, ...)."""
    uid = volume.series.series_instance_uid or "(no series UID)"
    if volume.array.ndim != 3:
        raise VolumeError(f"series {uid}: a colour volume cannot be segmented (grey CT only)")
    modality = volume.series.modality
    if config.modalities and modality not in config.modalities:
        raise VolumeError(
            f"series {uid}: modality {modality or '(none)'} is not one this segmentation model "
            f"was trained on ({', '.join(config.modalities)})"
        )
    if volume.array.shape[0] < MIN_SLICES:
        raise VolumeError(
            f"series {uid}: {volume.array.shape[0]} slice(s); a 3D segmentation needs at least "
            f"{MIN_SLICES}"
        )


def grid_affine(volume: Volume3D) -> npt.NDArray[np.float64]:
    """The RAS affine of the volume's voxels in ``[x, y, z]`` = (column, row, slice) order."""
    # As inference.volume.nifti.to_nifti: index order reversed, LPS -> RAS.
    return RAS_FROM_LPS @ volume.affine[:, [2, 1, 0, 3]]


def as_meta_tensor(
    array: npt.NDArray[np.generic], volume: Volume3D, dtype: torch.dtype = torch.float32
) -> MetaTensor:
    """``array`` on the volume's grid (``[slice, row, column]``) as a channel-first MetaTensor."""
    xyz = np.ascontiguousarray(np.swapaxes(array, 0, 2))
    return MetaTensor(
        torch.from_numpy(xyz).to(dtype)[None], affine=torch.from_numpy(grid_affine(volume))
    )


def canonical_transform(config: SegmentationModelConfig, with_label: bool = False) -> Compose:
    """Orientation to RAS, resampling to ``config.spacing`` (labels by nearest neighbour) and
    HU scaling of the image, on a dictionary with ``image`` (and ``label``)."""
    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    low, high = config.hu_range
    return Compose(
        [
            Orientationd(keys=keys, axcodes=CANONICAL_ORIENTATION),
            Spacingd(
                keys=keys,
                pixdim=config.spacing,
                mode=["bilinear", "nearest"] if with_label else "bilinear",
                dtype=np.float32,
            ),
            ScaleIntensityRanged(
                keys=IMAGE, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True
            ),
        ]
    )


def model_input(volume: Volume3D, config: SegmentationModelConfig) -> MetaTensor:
    """The network's input for ``volume``: ``(1, x, y, z)`` on the model grid, its affine kept."""
    check_readable(volume, config)
    data = canonical_transform(config)({IMAGE: as_meta_tensor(volume.array, volume)})
    image = data[IMAGE]
    assert isinstance(image, MetaTensor)
    return image
