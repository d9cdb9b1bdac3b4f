"""The negation-aware labeller on hand-written sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.evaluate.labeller import Labeller, Mention, micro_f1

CONF = Path(__file__).resolve().parents[3] / "conf" / "findings"


@pytest.fixture(scope="module")
def chest() -> Labeller:
    return Labeller.from_catalogues([CONF / "cxr.toml"])


@pytest.fixture(scope="module")
def medpix() -> Labeller:
    return Labeller.from_catalogues([CONF / "medpix.toml"])


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("No pleural effusion.", Mention.ABSENT),
        ("There is no evidence of effusion.", Mention.ABSENT),
        ("The lungs are clear without effusion.", Mention.ABSENT),
        ("The effusion has resolved.", Mention.ABSENT),
        ("Effusion on the left is not seen.", Mention.ABSENT),
        ("Small left pleural effusion.", Mention.PRESENT),
        ("No pneumothorax, but there is a pleural effusion.", Mention.PRESENT),
        ("No effusion on the left. Right pleural effusion.", Mention.PRESENT),
        ("Effusion is not excluded.", Mention.UNCERTAIN),
        ("Cannot rule out a small effusion.", Mention.UNCERTAIN),
        ("Possible right pleural effusion.", Mention.UNCERTAIN),
    ],
)
def test_effusion_statements(chest: Labeller, sentence: str, expected: Mention) -> None:
    assert chest.label(sentence).get("effusion") is expected


def test_catalogue_negative_prompts_and_unmentioned_findings(chest: Labeller) -> None:
    labels = chest.label("Heart size is normal. The lungs are clear.")
    assert labels == {"cardiomegaly": Mention.ABSENT, "infiltration": Mention.ABSENT}
    labels = chest.label("The heart is enlarged. No focal consolidation.")
    assert labels["cardiomegaly"] is Mention.PRESENT
    assert labels["infiltration"] is Mention.ABSENT
    assert "effusion" not in labels and "atelectasis" not in labels
    assert chest.positives("Effusion is not excluded. No atelectasis.") == {"effusion"}


def test_group_members_are_named_whatever_the_negation(medpix: Labeller) -> None:
    assert medpix.positives("Axial CT of the abdomen shows no mass in the liver.") == {
        "ct",
        "axial",
        "abdomen",
    }
    assert medpix.positives("Sagittal T2-weighted MRI of the lumbar spine.") == {
        "mr",
        "sagittal",
        "spine_and_muscles",
    }
    assert medpix.positives("Sagittal reformats were obtained.") == {"sagittal"}
    assert medpix.positives("A 3 cm lesion.") == set()


def test_micro_f1_pools_images_and_findings() -> None:
    predicted = [{"ct", "axial"}, {"mr"}, set()]
    reference = [{"ct", "coronal"}, {"mr"}, {"ct"}]
    agreement = micro_f1(predicted, reference, ["ct", "mr", "axial", "coronal"])
    # TP: ct, mr; FP: axial; FN: coronal, ct (third image).
    assert (agreement.true_positive, agreement.false_positive, agreement.false_negative) == (
        2,
        1,
        2,
    )
    assert agreement.f1 == pytest.approx(4 / 7)
