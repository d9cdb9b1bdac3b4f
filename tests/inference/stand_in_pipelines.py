"""Stand-in impression and segmentation pipelines for the worker's output tests.

They read a series the way the real pipelines' contract says (``inference.reader.Pipeline``)
but decide by a fixed rule (a Hounsfield band written in the package, a fixed sentence), so
a worker test can check what the worker does with a LabelMap and an Impression without
training a model. Only tests that point ``inference.reader.PIPELINES`` at them load them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from inference.dicom_out.structures import load_structures
from inference.packages import read_manifest
from inference.results import AlgorithmIdentity, Impression, LabelMap
from inference.volume.types import Image2D, Volume3D, VolumeError

CATALOGUE = (
    Path(__file__).resolve().parents[2] / "conf" / "segmentation" / "totalsegmentator-v2.toml"
)
LIVER = 5  # TotalSegmentator v2 `total` class id of the liver
IMPRESSION = "Axial CT of the abdomen. No acute abnormality."
RULE = "rule.json"


def _identity(path: Path) -> AlgorithmIdentity:
    manifest = read_manifest(path)
    return AlgorithmIdentity(manifest.name, manifest.version, manifest.content_hash, manifest.task)


class ThresholdSegmenter:
    """Calls every voxel in the package's Hounsfield band (``rule.json``: low, high) "liver"."""

    def __init__(self, path: Path) -> None:
        self.algorithm = _identity(path)
        self.structures = (load_structures(CATALOGUE)[LIVER],)
        band = json.loads((path / RULE).read_text())
        self.low, self.high = float(band["low"]), float(band["high"])

    def read(
        self, item: Volume3D | Sequence[Image2D], window: tuple[float, float] | None
    ) -> LabelMap:
        if not isinstance(item, Volume3D):
            raise VolumeError("segmentation reads CT volumes, not projection images")
        values = np.asarray(item.array)
        labels = np.where((values >= self.low) & (values <= self.high), LIVER, 0).astype(np.uint8)
        return LabelMap(labels, item, self.structures, self.algorithm)


class FixedSentence:
    def __init__(self, path: Path) -> None:
        self.algorithm = _identity(path)

    def read(
        self, item: Volume3D | Sequence[Image2D], window: tuple[float, float] | None
    ) -> Impression:
        return Impression(IMPRESSION, self.algorithm)


def load_segmenter(path: Path, device: torch.device) -> ThresholdSegmenter:
    return ThresholdSegmenter(path)


def load_sentence(path: Path, device: torch.device) -> FixedSentence:
    return FixedSentence(path)
