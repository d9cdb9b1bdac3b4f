"""Segment one volume: sliding-window inference on the model grid, argmax, back to the source.

Windows of ``config.roi_size`` overlap by ``config.overlap`` and are blended with Gaussian
weights (centre voxels count more than window edges, where context is cut off).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers.utils import sliding_window_inference

from inference.segmentation.config import SegmentationModelConfig
from inference.segmentation.preprocess import model_input
from inference.segmentation.resample import labels_on_source_grid
from inference.volume.types import Volume3D


def label_lookup(config: SegmentationModelConfig) -> npt.NDArray[np.integer]:
    """Output channel -> catalogue label (channel 0, background, -> 0)."""
    dtype = np.uint8 if max(config.labels, default=0) < 256 else np.uint16
    return np.array([0, *config.labels], dtype=dtype)


@torch.no_grad()
def segment_volume(
    network: torch.nn.Module,
    config: SegmentationModelConfig,
    volume: Volume3D,
    device: torch.device | None = None,
) -> npt.NDArray[np.integer]:
    """Catalogue labels of ``volume`` on its own grid (``volume.array.shape``).

    Raises :class:`inference.volume.types.VolumeError` for a volume the model cannot read.
    """
    parameter = next(network.parameters(), None)
    device = device or (parameter.device if parameter is not None else torch.device("cpu"))
    # The input follows the network's precision (a node on CUDA may hold it in float16).
    dtype = parameter.dtype if parameter is not None else torch.float32
    image = model_input(volume, config)
    affine = np.asarray(image.affine, dtype=np.float64)
    logits = sliding_window_inference(
        image.as_tensor()[None].to(device=device, dtype=dtype),
        roi_size=config.roi_size,
        sw_batch_size=config.sw_batch_size,
        predictor=network,
        overlap=config.overlap,
        mode="gaussian",
        padding_mode=config.padding_mode,
    )
    assert isinstance(logits, torch.Tensor)
    channels = logits[0].argmax(dim=0).cpu().numpy()
    labels = label_lookup(config)[channels]
    return labels_on_source_grid(labels, affine, volume)
