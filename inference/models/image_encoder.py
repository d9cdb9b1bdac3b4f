"""The image tower: a MONAI network for 2D or 3D input, ending in a feature vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inference.models.config import ImageEncoderConfig


class ImageEncoder(nn.Module):
    """MONAI ``ResNet`` or ``DenseNet121``: ``[B, C, *image_size]`` to ``[B, feature_dim]``."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        from monai.networks.nets.densenet import DenseNet121
        from monai.networks.nets.resnet import ResNet

        self.config = config
        self.net: nn.Module
        if config.architecture == "resnet":
            self.net = ResNet(
                block=config.block,
                layers=list(config.layers),
                block_inplanes=list(config.widths),
                spatial_dims=config.spatial_dims,
                n_input_channels=config.in_channels,
                conv1_t_size=config.conv1_t_size,
                # Stride 2 in the first convolution: on a CPU a step at 128 px is ~12x faster.
                conv1_t_stride=config.conv1_t_stride,
                num_classes=config.feature_dim,
            )
        else:
            self.net = DenseNet121(
                spatial_dims=config.spatial_dims,
                in_channels=config.in_channels,
                out_channels=config.feature_dim,
                dropout_prob=config.dropout,
            )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = 2 + self.config.spatial_dims
        if images.ndim != expected or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"image batch of shape {tuple(images.shape)}: expected [batch, "
                f"{self.config.in_channels}, {'x'.join(map(str, self.config.image_size))}]"
            )
        size = tuple(self.config.image_size)
        if tuple(images.shape[2:]) != size:
            # An ensemble's members may take different input sizes: each resamples the shared
            # input to its own, as the preprocessing would (antialiased when 2D).
            mode = "bilinear" if self.config.spatial_dims == 2 else "trilinear"
            images = F.interpolate(
                images, size=size, mode=mode, antialias=self.config.spatial_dims == 2
            )
        out: torch.Tensor = self.dropout(self.net(images))
        return out
