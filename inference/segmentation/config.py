"""What a segmentation package's network is and how it reads a volume (``config.json``).

Spatial fields follow MONAI's image order after the canonical orientation: ``(x, y, z)`` in
RAS, i.e. (left to right, posterior to anterior, inferior to superior); ``spacing`` is the
model grid's voxel size in mm along them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

NETWORKS = ("segresnet", "unet", "swinunetr")
PADDING_MODES = ("constant", "replicate", "reflect")


class SegmentationConfigError(ValueError):
    """A segmentation model configuration value is not allowed (the message names it)."""


@dataclass(frozen=True)
class SegmentationModelConfig:
    network: str = "segresnet"
    # SegResNet: initial filters; UNet: channels of the first level (doubled per level);
    # SwinUNETR: feature size (a multiple of 12).
    init_filters: int = 16
    blocks_down: tuple[int, ...] = (1, 2, 2, 4)  # SegResNet: residual blocks per level
    blocks_up: tuple[int, ...] = (1, 1, 1)
    levels: int = 4  # UNet: resolution levels
    dropout: float = 0.0
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    roi_size: tuple[int, int, int] = (96, 96, 32)  # training crops and inference windows
    # Hounsfield units mapped linearly to [0, 1] and clipped: air is 0, so constant padding
    # reads as air.
    hu_range: tuple[float, float] = (-1000.0, 1000.0)
    # The catalogue label of each output channel after the background channel 0.
    labels: tuple[int, ...] = ()
    modalities: tuple[str, ...] = ("CT",)
    overlap: float = 0.5  # sliding-window overlap
    sw_batch_size: int = 2
    # How a volume smaller than a window is padded: "replicate" continues the anatomy at the
    # edges of a short slab rather than pretending it ends in air.
    padding_mode: str = "replicate"

    @property
    def out_channels(self) -> int:
        return len(self.labels) + 1

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationModelConfig:
        """Build and check a configuration; raise :class:`SegmentationConfigError`."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SegmentationConfigError(
                f"unknown model key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        default = cls()
        values: dict[str, Any] = {}
        for key, value in data.items():
            want = getattr(default, key)
            if isinstance(want, tuple):
                if not isinstance(value, list | tuple):
                    raise SegmentationConfigError(f"model.{key} = {value!r}: expected a list")
                value = tuple(value)
            elif isinstance(want, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif type(value) is not type(want):
                raise SegmentationConfigError(
                    f"model.{key} = {value!r}: expected {type(want).__name__}"
                )
            values[key] = value
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.network not in NETWORKS:
            raise SegmentationConfigError(
                f"model.network = {self.network!r}: one of {', '.join(NETWORKS)}"
            )
        if self.padding_mode not in PADDING_MODES:
            raise SegmentationConfigError(
                f"model.padding_mode = {self.padding_mode!r}: one of {', '.join(PADDING_MODES)}"
            )
        if len(self.spacing) != 3 or not all(
            isinstance(s, int | float) and s > 0 for s in self.spacing
        ):
            raise SegmentationConfigError(
                f"model.spacing = {list(self.spacing)}: three positive sizes in mm"
            )
        if len(self.roi_size) != 3 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in self.roi_size
        ):
            raise SegmentationConfigError(
                f"model.roi_size = {list(self.roi_size)}: three whole numbers >= 8"
            )
        # The networks halve the grid once per level below the first.
        factor = 2 ** (
            len(self.blocks_down) - 1
            if self.network == "segresnet"
            else self.levels - 1
            if self.network == "unet"
            else 5
        )
        if any(s % factor for s in self.roi_size):
            raise SegmentationConfigError(
                f"model.roi_size = {list(self.roi_size)}: each size must be a multiple of "
                f"{factor} for this {self.network}"
            )
        # SegResNet normalises over 8 groups of channels; SwinUNETR needs 12 heads' worth.
        multiple = {"segresnet": 8, "swinunetr": 12}.get(self.network, 1)
        if self.init_filters < 1 or self.init_filters % multiple:
            raise SegmentationConfigError(
                f"model.init_filters = {self.init_filters}: a positive multiple of {multiple} "
                f"for {self.network}"
            )
        if self.network == "segresnet" and (
            not self.blocks_down
            or len(self.blocks_up) != len(self.blocks_down) - 1
            or min(self.blocks_down + self.blocks_up, default=1) < 1
        ):
            raise SegmentationConfigError(
                "model.blocks_down and model.blocks_up: positive counts, one fewer up than down"
            )
        if self.levels < 2:
            raise SegmentationConfigError(f"model.levels = {self.levels}: must be >= 2")
        if len(self.hu_range) != 2 or not self.hu_range[0] < self.hu_range[1]:
            raise SegmentationConfigError(
                f"model.hu_range = {list(self.hu_range)}: [low, high] with low < high"
            )
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.labels):
            raise SegmentationConfigError("model.labels: positive catalogue label values")
        if len(set(self.labels)) != len(self.labels):
            raise SegmentationConfigError("model.labels: a label is listed twice")
        if not 0.0 <= self.overlap < 1.0 or self.sw_batch_size < 1:
            raise SegmentationConfigError(
                "model.overlap must be in [0, 1) and model.sw_batch_size >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise SegmentationConfigError(f"model.dropout = {self.dropout}: must be in [0, 1)")
