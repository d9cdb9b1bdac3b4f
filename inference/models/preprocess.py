"""From a rebuilt image or volume to the network's input tensor (one path for both uses).

The steps: colour to grey, robust intensity scaling (0.5th to 99.5th percentile to [-1, 1]),
padding to a square (2D) so the aspect ratio survives, and resampling to the configured size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from inference.models.config import ImageEncoderConfig
from inference.volume.types import Image2D, Volume3D, VolumeError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _scale_intensity(array: np.ndarray, name: str) -> np.ndarray:
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise VolumeError(f"{name}: pixel values are not all finite")
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise VolumeError(f"{name}: the image is blank (every pixel has the value {lo})")
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0
    out: np.ndarray = scaled.astype(np.float32)
    return out


def image_to_tensor(image: Image2D, config: ImageEncoderConfig) -> torch.Tensor:
    """``[in_channels, rows, columns]`` float32 input for a 2D encoder."""
    if config.spatial_dims != 2:
        raise ValueError("image_to_tensor needs a 2D encoder configuration")
    pixels = np.asarray(image.pixels, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels @ _LUMA
    name = image.series.series_description or image.source_sop_instance_uid
    scaled = torch.from_numpy(_scale_intensity(pixels, name))
    rows, cols = scaled.shape
    side = max(rows, cols)
    # Pad with the background value (-1) to a centred square, then resample.
    top, left = (side - rows) // 2, (side - cols) // 2
    square = F.pad(scaled, (left, side - cols - left, top, side - rows - top), value=-1.0)
    out = F.interpolate(
        square[None, None], size=tuple(config.image_size), mode="bilinear", antialias=True
    )[0]
    return out.expand(config.in_channels, -1, -1).contiguous()


def volume_to_tensor(volume: Volume3D, config: ImageEncoderConfig) -> torch.Tensor:
    """``[in_channels, slices, rows, columns]`` float32 input for a 3D encoder."""
    if config.spatial_dims != 3:
        raise ValueError("volume_to_tensor needs a 3D encoder configuration")
    name = volume.series.series_description or volume.series.series_instance_uid
    scaled = torch.from_numpy(_scale_intensity(np.asarray(volume.array), name))
    out = F.interpolate(scaled[None, None], size=tuple(config.image_size), mode="trilinear")[0]
    return out.expand(config.in_channels, -1, -1, -1).contiguous()


def to_tensor(item: Image2D | Volume3D, config: ImageEncoderConfig) -> torch.Tensor:
    if isinstance(item, Volume3D):
        return volume_to_tensor(item, config)
    return image_to_tensor(item, config)
