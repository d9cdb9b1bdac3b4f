"""The committed MedPix impression package: intact, and it writes the impressions its card
shows for the same dev images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.impression.package import load_impression_package
from inference.models.preprocess import image_to_tensor
from inference.volume.image_file import read_image_file

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "models" / "impression-medpix-tiny"
MEDPIX = REPO.parent / "shared" / "data" / "medpix"


def test_committed_package_reproduces_its_card_examples() -> None:
    if not MEDPIX.is_dir():
        pytest.skip(f"shared data {MEDPIX} is absent (CI checks it out beside the repository)")
    package = load_impression_package(PACKAGE)
    assert package.manifest.task == "impression" and package.model.generates
    examples = json.loads((PACKAGE / "metrics.json").read_text())["examples"][:3]
    for example in examples:
        image = image_to_tensor(read_image_file(MEDPIX / example["image"]), package.config.image)
        grid, pooled = package.features(image[None])
        assert package.describe(grid, pooled) == [example["generated"]]
        assert package.retrieve(pooled) == [example["retrieved"]]
