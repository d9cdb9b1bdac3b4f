"""The rank-based AUC equals scikit-learn's, ties and degenerate labels included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.evaluate.metrics import auc, macro_auc


def test_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(60) < 0.3
        score = np.round(rng.random(60) + 0.3 * y, 1)  # rounding makes many ties
        assert auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auc(np.array([True, False]), np.array([0.9, 0.1])) == 1.0
    assert auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5


def test_auc_undefined_for_one_class_and_macro_needs_every_class() -> None:
    assert math.isnan(auc(np.array([True, True]), np.array([0.1, 0.2])))
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[labels].astype(np.float64)
    assert macro_auc(labels, probs) == 1.0
    assert math.isnan(macro_auc(np.array([0, 0, 1]), np.eye(3)[[0, 0, 1]]))
