"""Metrics with case-level bootstrap intervals: AUC, accuracy, retrieval recall and NDCG.

Several images share a case, so the bootstrap resamples cases (with all their images), not
images; an interval from image resampling would be too narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Estimate:
    """A figure with its bootstrap 95% interval (percentile method)."""

    value: float
    low: float
    high: float
    replicates: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "n_boot": self.replicates,
        }

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def case_bootstrap_indices(case_ids: Sequence[str], replicates: int, seed: int) -> list[IntArray]:
    """Image index sets of ``replicates`` case-level bootstrap samples."""
    rng = np.random.default_rng(seed)
    cases: dict[str, list[int]] = {}
    for i, c in enumerate(case_ids):
        cases.setdefault(c, []).append(i)
    groups = [np.asarray(v, dtype=np.int64) for v in cases.values()]
    out = []
    for _ in range(replicates):
        pick = rng.integers(0, len(groups), size=len(groups))
        out.append(np.concatenate([groups[j] for j in pick]))
    return out


def bootstrap(metric: Callable[[IntArray], float], n: int, samples: list[IntArray]) -> Estimate:
    """Point estimate on all ``n`` items plus the 2.5/97.5 percentiles over ``samples``.

    Replicates where the metric is undefined (e.g. one class only) are left out.
    """
    value = metric(np.arange(n, dtype=np.int64))
    values = [v for v in (metric(s) for s in samples) if np.isfinite(v)]
    if not values:
        return Estimate(value, float("nan"), float("nan"), 0)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return Estimate(float(value), float(lo), float(hi), len(values))


def auc(y: npt.NDArray[np.bool_], score: FloatArray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half): the value of
    ``sklearn.metrics.roc_auc_score``, without its input checks, which dominated the time of
    the bootstraps (hundreds of thousands of calls in a linear probe)."""
    positive = np.asarray(y, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(labels: IntArray, probs: FloatArray) -> float:
    """Mean one-vs-rest AUC over the classes present (``labels`` index ``probs`` columns)."""
    values = [auc(labels == k, probs[:, k]) for k in range(probs.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if len(finite) == probs.shape[1] else float("nan")


def accuracy(labels: IntArray, probs: FloatArray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def balanced_accuracy(labels: IntArray, probs: FloatArray) -> float:
    pred = probs.argmax(1)
    recalls = [float((pred[labels == k] == k).mean()) for k in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else float("nan")


def majority_baseline(labels: IntArray) -> float:
    """Accuracy of always answering the most frequent class of these labels."""
    if not len(labels):
        return float("nan")
    return float(np.bincount(labels).max() / len(labels))


def retrieval_hits(sims: FloatArray, relevant: npt.NDArray[np.bool_], k: int) -> FloatArray:
    """Per query: 1.0 when a relevant item is among the top ``k`` by similarity."""
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(relevant, top, axis=1).any(axis=1)
    return np.asarray(found, dtype=np.float64)


def ndcg(sims: FloatArray, relevant: npt.NDArray[np.bool_], k: int) -> FloatArray:
    """Per query NDCG@k with binary relevance."""
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis(relevant, top, axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (gains * discounts[: gains.shape[1]]).sum(1)
    ideal_n = np.minimum(relevant.sum(1), k)
    idcg = np.array([discounts[:m].sum() for m in ideal_n])
    out: FloatArray = np.where(idcg > 0, dcg / np.maximum(idcg, 1e-12), 0.0)
    return out


def chance_recall(relevant: npt.NDArray[np.bool_], k: int) -> float:
    """Expected recall@k of a random ranking: 1 - C(N-m, k) / C(N, k), averaged over queries."""
    n = relevant.shape[1]
    out = []
    for m in relevant.sum(1):
        miss = 1.0
        for j in range(min(k, n)):
            miss *= max(0.0, (n - m - j) / (n - j))
        out.append(1.0 - miss)
    return float(np.mean(out))
