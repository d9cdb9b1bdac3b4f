"""Loading a segmentation package: network, configuration and label catalogue, hash-checked.

Layout (beside ``package.json``, see :mod:`inference.packages`)::

    config.json          SegmentationModelConfig (network, model grid, HU range, labels)
    weights.safetensors  the network's weights (float16; loaded back as float32)
    structures.toml      the label catalogue the labels are codes of (SNOMED CT)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from inference.dicom_out.structures import CatalogueError, load_structures
from inference.packages import (
    CONFIG,
    WEIGHTS,
    Manifest,
    PackageError,
    require_task,
    verify_package,
)
from inference.results import AlgorithmIdentity, Structure
from inference.segmentation.config import SegmentationConfigError, SegmentationModelConfig
from inference.segmentation.network import build_network

TASK = "segmentation"
STRUCTURES = "structures.toml"
MODEL_FILES = (CONFIG, WEIGHTS, STRUCTURES)


@dataclass(frozen=True)
class SegmentationModel:
    """A loaded segmentation package (network in eval mode on its device)."""

    network: torch.nn.Module
    config: SegmentationModelConfig
    structures: tuple[Structure, ...]  # those of config.labels, in label order
    manifest: Manifest
    path: Path

    @property
    def algorithm(self) -> AlgorithmIdentity:
        m = self.manifest
        return AlgorithmIdentity(m.name, m.version, m.content_hash, TASK)


def load_segmentation_package(
    path: str | Path, device: str | torch.device = "cpu"
) -> SegmentationModel:
    """Check and load a segmentation package; :class:`PackageError` names what is wrong."""
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = verify_package(folder, required=MODEL_FILES)
    require_task(manifest, folder, TASK)
    try:
        config = SegmentationModelConfig.from_dict(
            json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        )
        catalogue = load_structures(folder / STRUCTURES)
    except (ValueError, SegmentationConfigError, CatalogueError) as exc:
        raise PackageError(f"package {folder}: {exc}") from exc
    unknown = [label for label in config.labels if label not in catalogue]
    if unknown:
        raise PackageError(
            f"package {folder}: labels {unknown} of {CONFIG} are not in {STRUCTURES}"
        )
    network = build_network(config)
    try:
        network.load_state_dict(load_file(folder / WEIGHTS))
    except RuntimeError as exc:
        raise PackageError(f"package {folder}: {WEIGHTS} does not fit {CONFIG}: {exc}") from exc
    network.to(torch.device(device)).eval()
    return SegmentationModel(
        network=network,
        config=config,
        structures=tuple(catalogue[label] for label in sorted(config.labels)),
        manifest=manifest,
        path=folder,
    )
