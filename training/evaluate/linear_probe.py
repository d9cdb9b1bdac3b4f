"""Data efficiency (the ELIXR / RadTex protocol): a linear probe on frozen image features.

The protocol is fixed before any result is seen:

* features: the image encoder's output (before the projection), BatchNorm in eval mode, for
  the probe's training split and the evaluation split (an ensemble's members' features side by
  side); or, with ``features="stages"``, the global average of each ResNet stage's output side
  by side (coarse and fine features), extracted the same way from the random encoders;
* probe: multinomial logistic regression on standardised features, ``C = 1.0`` (fixed, not
  tuned), at each label fraction (default 10% and 100%), on 5 fixed label subsets (seeds
  0..4, stratified so every class appears; 100% is one subset: all labels);
* reference: the same architecture from 5 random initialisations (seeds 0..4; an ensemble of
  K members: K encoders per initialisation, seeds ``i + 5 j``), each probed the same way
  (random init ``i`` pairs with label subset ``i``);
* figure: macro one-vs-rest AUC on the evaluation split; the pretrained-minus-random
  difference with a paired case-level bootstrap interval over the evaluation images (the same
  resampled images for both), and the spread of the difference over label subsets beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from inference.models.config import ImageEncoderConfig
from inference.models.image_encoder import ImageEncoder
from training.archive import ArchiveRecord
from training.evaluate.metrics import case_bootstrap_indices, macro_auc

FRACTIONS = (0.1, 1.0)
FEATURES = ("final", "stages")
SUBSETS = 5
PROBE_C = 1.0


@dataclass(frozen=True)
class ProbeTask:
    """One label column and the classes that count (other values are left out)."""

    column: str
    classes: tuple[str, ...]


@torch.no_grad()
def encoder_features(
    encoders: Sequence[ImageEncoder], images: torch.Tensor, features: str = "final"
) -> np.ndarray:
    """The encoders' features of every image, side by side (one encoder: its own)."""
    if features not in FEATURES:
        raise ValueError(f"probe features {features!r}: one of {', '.join(FEATURES)}")
    parts = []
    for encoder in encoders:
        encoder.eval()
        extract = encoder if features == "final" else _stage_extractor(encoder)
        out = [extract(images[i : i + 64].float()).double() for i in range(0, len(images), 64)]
        parts.append(torch.cat(out))
    return torch.cat(parts, dim=1).numpy()


def _stage_extractor(encoder: ImageEncoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The global average of each ResNet stage's output (``layer1`` .. ``layer4``)."""
    stages = [getattr(encoder.net, f"layer{i}", None) for i in range(1, 5)]
    if encoder.config.architecture != "resnet" or not all(
        isinstance(s, torch.nn.Module) for s in stages
    ):
        raise ValueError("stage features need a ResNet image encoder")

    def extract(images: torch.Tensor) -> torch.Tensor:
        pooled: list[torch.Tensor] = []
        hooks = [
            s.register_forward_hook(lambda _m, _i, out: pooled.append(out.flatten(2).mean(2)))
            for s in stages
            if isinstance(s, torch.nn.Module)
        ]
        try:
            encoder(images)
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(pooled, dim=1)

    return extract


def random_encoder(config: ImageEncoderConfig, seed: int) -> ImageEncoder:
    torch.manual_seed(seed)
    return ImageEncoder(config)


def _labels(records: Sequence[ArchiveRecord], task: ProbeTask) -> tuple[np.ndarray, np.ndarray]:
    keep, labels = [], []
    for i, r in enumerate(records):
        value = r.label(task.column)
        if value in task.classes:
            keep.append(i)
            labels.append(task.classes.index(value))
    return np.asarray(keep, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the labels (at least one per class)."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n = max(1, round(fraction * len(members)))
        picked.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def probe_probabilities(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int
) -> np.ndarray:
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=PROBE_C, max_iter=3000)
    model.fit(scaler.transform(train_x), train_y)
    probs = np.zeros((len(test_x), n_classes))
    probs[:, model.classes_] = model.predict_proba(scaler.transform(test_x))
    return probs


def run_probe(
    pretrained: Sequence[ImageEncoder],
    train_images: torch.Tensor,
    train_records: Sequence[ArchiveRecord],
    test_images: torch.Tensor,
    test_records: Sequence[ArchiveRecord],
    tasks: Sequence[ProbeTask],
    fractions: Sequence[float] = FRACTIONS,
    subsets: int = SUBSETS,
    replicates: int = 1000,
    features: str = "final",
) -> dict[str, Any]:
    """Probe AUCs of the pretrained and of random encoders, and their paired difference.

    ``pretrained``: the image encoder(s) of a model (an ensemble's members: K of them).
    """
    k_members = len(pretrained)
    # Random encoder j mirrors member j (its input size too, in a multi-resolution ensemble).
    encoders = {"pretrained": [list(pretrained)]} | {
        "random": [
            [random_encoder(pretrained[j].config, s + subsets * j) for j in range(k_members)]
            for s in range(subsets)
        ]
    }
    feats = {
        name: [
            (
                encoder_features(e, train_images, features),
                encoder_features(e, test_images, features),
            )
            for e in encs
        ]
        for name, encs in encoders.items()
    }
    out: dict[str, Any] = {
        "protocol": __doc__,
        "C": PROBE_C,
        "subsets": subsets,
        "features": features,
        "tasks": {},
    }
    kept: dict[str, list[tuple[np.ndarray, dict[str, list[np.ndarray]], np.ndarray]]] = {}
    shared_samples: list[np.ndarray] = []
    for task in tasks:
        tr_idx, tr_y = _labels(train_records, task)
        te_idx, te_y = _labels(test_records, task)
        if len(np.unique(te_y)) < len(task.classes) or len(np.unique(tr_y)) < len(task.classes):
            out["tasks"][task.column] = {"skipped": "a class has no example in a split"}
            continue
        samples = case_bootstrap_indices(
            [test_records[i].case_id for i in te_idx], replicates, seed=0
        )
        shared_samples = samples
        k = len(task.classes)
        per_fraction: dict[str, Any] = {}
        for fraction in fractions:
            n_sub = 1 if fraction >= 1.0 else subsets
            probs: dict[str, list[np.ndarray]] = {"pretrained": [], "random": []}
            for s in range(n_sub):
                pick = label_subset(tr_y, fraction, seed=s)
                for name in probs:
                    runs = (
                        feats[name]
                        if name == "random" and fraction >= 1.0
                        else [feats[name][min(s, len(feats[name]) - 1)]]
                    )
                    for train_x, test_x in runs:
                        probs[name].append(
                            probe_probabilities(
                                train_x[tr_idx][pick], tr_y[pick], test_x[te_idx], k
                            )
                        )
            per_fraction[f"{fraction:g}"] = _compare([(probs, te_y)], samples)
            kept.setdefault(f"{fraction:g}", []).append((te_idx, probs, te_y))
            per_fraction[f"{fraction:g}"]["labels_used"] = len(label_subset(tr_y, fraction, 0))
        out["tasks"][task.column] = {
            "classes": list(task.classes),
            "n_train": len(tr_y),
            "n_eval": len(te_y),
            "fractions": per_fraction,
        }
    # Several tasks judged on the same images (binary findings): their macro average too.
    ran = [v for v in out["tasks"].values() if "fractions" in v]
    same = all(
        len(group) == len(ran) and all(np.array_equal(group[0][0], g[0]) for g in group)
        for group in kept.values()
    )
    if len(ran) > 1 and same:
        out["macro"] = {
            fraction: _compare([(probs, y) for _, probs, y in group], shared_samples)
            | {"labels_used": ran[0]["fractions"][fraction]["labels_used"]}
            for fraction, group in kept.items()
        }
    return out


def _compare(
    tasks: list[tuple[dict[str, list[np.ndarray]], np.ndarray]], samples: list[np.ndarray]
) -> dict[str, Any]:
    """Pretrained vs random probe AUC, averaged over ``tasks`` (one, or the binary findings
    of a macro average), with the paired bootstrap of the difference over ``samples``."""

    def mean_auc(name: str, idx: np.ndarray) -> float:
        return float(
            np.mean(
                [np.mean([macro_auc(y[idx], p[idx]) for p in probs[name]]) for probs, y in tasks]
            )
        )

    everything = np.arange(len(tasks[0][1]))
    pre = mean_auc("pretrained", everything)
    rnd = mean_auc("random", everything)
    diffs = []
    for s in samples:
        d = mean_auc("pretrained", s) - mean_auc("random", s)
        if np.isfinite(d):
            diffs.append(d)
    lo, hi = np.percentile(diffs, [2.5, 97.5]) if diffs else (np.nan, np.nan)
    n_pre = len(tasks[0][0]["pretrained"])
    per_subset_pre = [
        float(np.mean([macro_auc(y, probs["pretrained"][i]) for probs, y in tasks]))
        for i in range(n_pre)
    ]
    per_subset_rnd = [
        float(np.mean([macro_auc(y, probs["random"][i]) for probs, y in tasks]))
        for i in range(len(tasks[0][0]["random"]))
    ]
    return {
        "pretrained_auc": pre,
        "random_auc": rnd,
        "difference": pre - rnd,
        "difference_ci_low": float(lo),
        "difference_ci_high": float(hi),
        "p_no_gain": float(np.mean(np.asarray(diffs) <= 0.0)) if diffs else float("nan"),
        "pretrained_auc_per_subset": per_subset_pre,
        "random_auc_per_run": per_subset_rnd,
        "pretrained_subset_spread": float(np.ptp(per_subset_pre)) if per_subset_pre else 0.0,
    }
