"""The model card's target table: met, not met, and not measurable on this data."""

from __future__ import annotations

from training.evaluate.card import check_targets, target_lines


def test_targets_without_labels_in_the_data_read_not_measured() -> None:
    modality = {"accuracy": {"value": 0.95}, "balanced_accuracy": {"value": 0.5}}
    results = {"groups": {"modality": modality, "plane": {}}}
    targets = {
        "groups.modality.accuracy": 0.9,
        "groups.modality.balanced_accuracy": 0.99,
        "groups.plane.macro_auc": 0.75,
    }
    checks = check_targets(results, targets)
    assert [c["met"] for c in checks.values()] == [True, False, False]
    rows = target_lines(checks)[2:]
    assert rows[0].endswith("| 0.950 | yes |")
    assert rows[1].endswith("| 0.500 | NO |")
    assert rows[2].endswith("| n/a | not measured |")
