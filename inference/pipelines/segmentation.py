"""Organ segmentation of a CT series with a segmentation package (the node's third model).

The pipeline reads the rebuilt volume on the package's model grid and returns a
:class:`~inference.results.LabelMap` on the series' own grid, ready for a DICOM SEG
(:mod:`inference.dicom_out.seg`) and per-structure volumes. Projection images, colour and
modalities the package was not trained on are refused with a :class:`VolumeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from inference.results import LabelMap
from inference.segmentation.package import SegmentationModel, load_segmentation_package
from inference.segmentation.segment import segment_volume
from inference.volume.types import Image2D, Volume3D, VolumeError


class SegmentationPipeline:
    """One loaded segmentation package, kept for every series routed to it."""

    def __init__(self, model: SegmentationModel) -> None:
        self.model = model
        self.algorithm = model.algorithm

    def read(
        self, item: Volume3D | Sequence[Image2D], window: tuple[float, float] | None = None
    ) -> LabelMap:
        """Segment a rebuilt series. ``window`` (the stored display window) is not used: the
        model reads Hounsfield units through its own fixed range, as in training."""
        if not isinstance(item, Volume3D):
            uid = item[0].series.series_instance_uid if item else "(empty)"
            raise VolumeError(
                f"series {uid}: projection images cannot be segmented; the segmentation "
                "model reads CT volumes"
            )
        labels = segment_volume(self.model.network, self.model.config, item)
        return LabelMap(labels, item, self.model.structures, self.algorithm)


def load_pipeline(path: Path, device: torch.device) -> SegmentationPipeline:
    """The node's entry point (``inference.reader.PIPELINES["segmentation"]``)."""
    return SegmentationPipeline(load_segmentation_package(path, device))
