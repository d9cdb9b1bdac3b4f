"""The segmentation network of a configuration: MONAI's SegResNet, UNet or SwinUNETR."""

from __future__ import annotations

import torch
from monai.networks.nets.segresnet import SegResNet
from monai.networks.nets.swin_unetr import SwinUNETR
from monai.networks.nets.unet import UNet

from inference.segmentation.config import SegmentationModelConfig


def build_network(config: SegmentationModelConfig) -> torch.nn.Module:
    """A fresh (randomly initialised) network: one CT channel in, background + labels out."""
    if config.network == "segresnet":
        return SegResNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=config.out_channels,
            init_filters=config.init_filters,
            blocks_down=config.blocks_down,
            blocks_up=config.blocks_up,
            dropout_prob=config.dropout or None,
        )
    if config.network == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=config.out_channels,
            channels=tuple(config.init_filters * 2**i for i in range(config.levels)),
            strides=(2,) * (config.levels - 1),
            num_res_units=2,
            dropout=config.dropout,
        )
    return SwinUNETR(
        in_channels=1,
        out_channels=config.out_channels,
        feature_size=config.init_filters,
        drop_rate=config.dropout,
        spatial_dims=3,
    )
