"""Writing a trained segmentation network as a package (layout: inference.segmentation.package)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from inference.packages import CONFIG, WEIGHTS, Manifest
from inference.segmentation.config import SegmentationModelConfig
from inference.segmentation.package import STRUCTURES, TASK
from training.package import weights_bytes, write_package_folder


def write_segmentation_package(
    destination: Path,
    *,
    name: str,
    version: str,
    network: torch.nn.Module,
    config: SegmentationModelConfig,
    catalogue: Path,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write network, configuration and label catalogue into ``destination`` (never reused)."""

    def write_files(folder: Path) -> Iterable[str]:
        (folder / WEIGHTS).write_bytes(weights_bytes(network.state_dict()))
        text = json.dumps(config.to_dict(), indent=2) + "\n"
        (folder / CONFIG).write_text(text, encoding="utf-8")
        shutil.copyfile(catalogue, folder / STRUCTURES)
        return (CONFIG, WEIGHTS, STRUCTURES)

    return write_package_folder(
        destination, name=name, version=version, task=TASK, write_files=write_files, extra=extra
    )
