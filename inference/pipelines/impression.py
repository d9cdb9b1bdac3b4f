"""The impression of one series in words, by an impression package (issue 14).

A projection series (X-ray) is read by its first image. A CT or MR volume is read as key
images, exactly as the findings pipeline reads it (:func:`key_image_tensors`: central planes,
CT in its display window), and the impression is written for **the plane nearest the
centre** of those read. The generator was trained on single key images, and its
cross-attention reads the image's spatial feature grid: a mean of several planes' grids
would blur different anatomy into a feature no training image had, whereas the central plane
is one image like those it learnt from. The same plane gives the retrieval fallback.

A package without a generator (a retrieval-only package) answers with the nearest training
report: the fallback the node uses when no generator is routed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from inference.impression.package import ImpressionPackage, load_impression_package
from inference.models.preprocess import image_to_tensor
from inference.pipelines.findings import key_image_tensors
from inference.results import AlgorithmIdentity, Impression
from inference.volume.types import Image2D, Volume3D, VolumeError


class ImpressionPipeline:
    """One loaded impression package; ``read`` turns a rebuilt series into an Impression."""

    def __init__(self, package: ImpressionPackage, slices: int = 9) -> None:
        self.package = package
        self.slices = slices
        manifest = package.manifest
        self.algorithm = AlgorithmIdentity(
            manifest.name, manifest.version, manifest.content_hash, "impression"
        )

    def read(
        self, item: Volume3D | Sequence[Image2D], window: tuple[float, float] | None = None
    ) -> Impression:
        """The impression of a series; ``window`` (centre, width) is the CT display window."""
        config = self.package.config.image
        if isinstance(item, Volume3D):
            if item.array.ndim != 3:
                raise VolumeError(
                    f"series {item.series.series_instance_uid}: a colour volume cannot be read "
                    "by an impression model"
                )
            tensors, uids, _ = key_image_tensors(item, window, config, self.slices)
            central = tensors.shape[0] // 2
            image = tensors[central : central + 1]
            source = uids[central]
        else:
            images = list(item)
            if not images:
                raise VolumeError("the series has no image to read")
            image = image_to_tensor(images[0], config)[None]
            source = images[0].source_sop_instance_uid
        with torch.no_grad():
            grid, pooled = self.package.features(image)
            text = self.package.describe(grid, pooled, [f"instance {source}"])[0]
        return Impression(text=text, algorithm=self.algorithm)


def load_pipeline(path: Path, device: torch.device) -> ImpressionPipeline:
    """The node's entry point (``inference.reader.PIPELINES``)."""
    return ImpressionPipeline(load_impression_package(path, device))
