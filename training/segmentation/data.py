"""Training volumes on the model grid, and the random crops and augmentations drawn from them.

Each labelled volume goes through the node's own preprocessing once
(:func:`inference.segmentation.preprocess.canonical_transform`, labels by nearest neighbour);
then every step draws crops of ``model.roi_size``, centred on a labelled voxel with
probability ``pos / (pos + neg)`` (foreground-weighted), with random flips, a small affine
(rotation and scale: another patient's size and posture) and HU-scale jitter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.compose import Compose
from monai.transforms.croppad.dictionary import RandCropByPosNegLabeld, SpatialPadd
from monai.transforms.intensity.dictionary import RandScaleIntensityd, RandShiftIntensityd
from monai.transforms.spatial.dictionary import RandAffined, RandFlipd

from inference.segmentation.config import SegmentationModelConfig
from inference.segmentation.preprocess import IMAGE, LABEL, as_meta_tensor, canonical_transform
from training.archive.label_volumes import LabelledVolume


@dataclass(frozen=True)
class Augmentation:
    """The random part of training (``[optim]`` keys of the configuration)."""

    pos: float = 2.0
    neg: float = 1.0
    flip_axes: tuple[int, ...] = ()  # MONAI spatial axes of the RAS model grid: 0 x, 1 y, 2 z
    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_degrees: float = 10.0
    scale_fraction: float = 0.15
    intensity_prob: float = 0.5
    intensity_shift: float = 0.05  # of the [0, 1] HU scale
    intensity_scale: float = 0.1


def channel_lookup(config: SegmentationModelConfig, max_label: int) -> npt.NDArray[np.int64]:
    """Catalogue label -> output channel; labels the model does not learn map to 0."""
    lookup = np.zeros(max(max_label, *config.labels, 0) + 1, dtype=np.int64)
    for channel, label in enumerate(config.labels, start=1):
        lookup[label] = channel
    return lookup


def on_model_grid(item: LabelledVolume, config: SegmentationModelConfig) -> dict[str, MetaTensor]:
    """Image and output-channel labels of ``item`` resampled onto the model grid."""
    channels = channel_lookup(config, int(item.labels.max()))[item.labels]
    data = canonical_transform(config, with_label=True)(
        {
            IMAGE: as_meta_tensor(item.volume.array, item.volume),
            LABEL: as_meta_tensor(channels, item.volume),
        }
    )
    return {IMAGE: data[IMAGE], LABEL: data[LABEL]}


def crop_transform(
    config: SegmentationModelConfig, augment: Augmentation, samples: int, train: bool = True
) -> Compose:
    """Padding to one window, ``samples`` foreground-weighted crops, then (``train``) the
    random flips, affine and intensity changes."""
    keys = [IMAGE, LABEL]
    steps: list[Any] = [
        # Replicate: a short slab continues its edge slices, as sliding-window inference pads.
        SpatialPadd(keys=keys, spatial_size=config.roi_size, mode=config.padding_mode),
        RandCropByPosNegLabeld(
            keys=keys,
            label_key=LABEL,
            spatial_size=config.roi_size,
            pos=augment.pos,
            neg=augment.neg,
            num_samples=samples,
        ),
    ]
    if train:
        steps += [
            RandFlipd(keys=keys, prob=augment.flip_prob, spatial_axis=a) for a in augment.flip_axes
        ]
        if augment.affine_prob > 0:
            angle = np.deg2rad(augment.rotate_degrees)
            steps.append(
                RandAffined(
                    keys=keys,
                    prob=augment.affine_prob,
                    rotate_range=(angle, angle, angle),
                    scale_range=(augment.scale_fraction,) * 3,
                    mode=["bilinear", "nearest"],
                    padding_mode="border",
                )
            )
        steps += [
            RandScaleIntensityd(
                keys=IMAGE, factors=augment.intensity_scale, prob=augment.intensity_prob
            ),
            RandShiftIntensityd(
                keys=IMAGE, offsets=augment.intensity_shift, prob=augment.intensity_prob
            ),
        ]
    return Compose(steps)


def batch_of(crops: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops as plain tensors: images ``(B, 1, ...)`` float, labels ``(B, 1, ...)`` long."""
    images = torch.stack([torch.as_tensor(c[IMAGE]).float() for c in crops])
    labels = torch.stack([torch.as_tensor(c[LABEL]).long() for c in crops])
    return images.as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor)
