"""Zero-shot evaluation of a findings package on an archive split (``vlnode evaluate``).

Works on any folder in a known archive layout, including held-back ones it has never seen:
the catalogue's ``label`` entries say which label column judges which finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.packages import FindingsModel
from inference.zero_shot import FindingCatalogue, build_classifier, score
from training.archive import ArchiveRecord, read_archive
from training.datasets import load_images
from training.evaluate.metrics import (
    Estimate,
    accuracy,
    auc,
    balanced_accuracy,
    bootstrap,
    case_bootstrap_indices,
    chance_recall,
    macro_auc,
    majority_baseline,
    ndcg,
    retrieval_hits,
)

RETRIEVAL_K = (1, 5, 10)


@dataclass(frozen=True)
class EvalData:
    """Images of one split with their embeddings, ready for every metric."""

    records: tuple[ArchiveRecord, ...]
    image_emb: torch.Tensor
    summary_lines: tuple[str, ...]
    skipped: dict[str, int]


def embed_split(model: FindingsModel, folder: Path, split: str | None) -> EvalData:
    archive = read_archive(folder, split=split, require_text=False)
    images = load_images(archive.records, model.config.image, archive.summary)
    emb = model.embed_images(images.images) if len(images.records) else torch.zeros(0, 1)
    return EvalData(
        records=images.records,
        image_emb=emb,
        summary_lines=tuple(archive.summary.lines()),
        skipped=archive.summary.counts(),
    )


def _group_task(
    catalogue: FindingCatalogue, group: str, data: EvalData, probs: torch.Tensor, names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    members = catalogue.groups()[group]
    idx, labels = [], []
    for i, rec in enumerate(data.records):
        for k, f in enumerate(members):
            if f.label_column and rec.label(f.label_column) in f.label_values:
                idx.append(i)
                labels.append(k)
                break
    if not idx:
        return None
    cols = [names.index(f.name) for f in members]
    p = probs[idx][:, cols].double().numpy()
    return np.asarray(idx), np.asarray(labels, dtype=np.int64), p, [f.name for f in members]


def evaluate_zero_shot(
    model: FindingsModel,
    data: EvalData,
    replicates: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot group and finding metrics, and caption retrieval, each with a 95% interval."""
    started = time.monotonic()
    catalogue = model.catalogue
    classifier = build_classifier(catalogue, model.embed_texts, float(model.model.scale().detach()))
    scores = score(classifier, data.image_emb)
    names = list(scores.names)
    case_ids = [r.case_id for r in data.records]
    out: dict[str, Any] = {"groups": {}, "findings": {}, "n_images": len(data.records)}
    out["n_cases"] = len(set(case_ids))

    for group in catalogue.groups():
        task = _group_task(catalogue, group, data, scores.probabilities, names)
        if task is None:
            continue
        idx, labels, probs, classes = task
        entry = group_metrics(labels, probs, classes, [case_ids[i] for i in idx], replicates, seed)
        out["groups"][group] = entry
        out.setdefault("_roc", {})[group] = (labels, probs, classes)

    for f in catalogue.binary():
        if not f.label_column:
            continue
        y = np.array([r.label(f.label_column) in f.label_values for r in data.records])
        p = scores.column(f.name).double().numpy()
        samples = case_bootstrap_indices(case_ids, replicates, seed)
        out["findings"][f.name] = {
            "positives": int(y.sum()),
            "n": len(y),
            "auc": bootstrap(_auc_of(y, p), len(y), samples).to_dict(),
        }
    if out["findings"]:
        vals = [v["auc"]["value"] for v in out["findings"].values()]
        finite = [v for v in vals if np.isfinite(v)]
        out["findings_macro_auc"] = float(np.mean(finite)) if finite else float("nan")

    retrieval = evaluate_retrieval(model, data, replicates, seed)
    if retrieval:
        out["retrieval"] = retrieval
    out["seconds"] = time.monotonic() - started
    return out


def group_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    case_ids: list[str],
    replicates: int,
    seed: int,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, majority baseline, macro and per-class one-vs-rest AUC."""
    samples = case_bootstrap_indices(case_ids, replicates, seed)
    n = len(labels)
    return {
        "classes": classes,
        "n": n,
        "class_counts": {c: int((labels == k).sum()) for k, c in enumerate(classes)},
        "accuracy": bootstrap(lambda s: accuracy(labels[s], probs[s]), n, samples).to_dict(),
        "balanced_accuracy": bootstrap(
            lambda s: balanced_accuracy(labels[s], probs[s]), n, samples
        ).to_dict(),
        "majority_baseline": majority_baseline(labels),
        "macro_auc": bootstrap(lambda s: macro_auc(labels[s], probs[s]), n, samples).to_dict(),
        "per_class_auc": {
            c: bootstrap(_auc_of(labels == k, probs[:, k]), n, samples).to_dict()
            for k, c in enumerate(classes)
        },
    }


def evaluate_retrieval(
    model: FindingsModel, data: EvalData, replicates: int, seed: int
) -> dict[str, Any] | None:
    """Image-to-caption retrieval; a caption identical to the true one counts as a hit."""
    captions = [r.section("caption") for r in data.records]
    keep = [i for i, c in enumerate(captions) if c]
    if len(keep) < 2:
        return None
    texts = [captions[i] for i in keep]
    txt = model.embed_texts(texts).double().numpy()
    img = data.image_emb[keep].double().numpy()
    sims = img @ txt.T
    text_arr = np.array(texts, dtype=object)
    relevant = text_arr[:, None] == text_arr[None, :]
    n = len(keep)
    samples = case_bootstrap_indices([data.records[i].case_id for i in keep], replicates, seed)
    out: dict[str, Any] = {
        "n_queries": n,
        "repeated_captions": int(n - len(set(texts))),
        "queries_with_repeated_caption": int((relevant.sum(1) > 1).sum()),
    }
    for k in RETRIEVAL_K:
        hits = retrieval_hits(sims, relevant, k)
        # Two chance levels: k/N, the chance that a random ranking puts the query's own
        # caption in the top k; and the chance of any identical caption there (stricter).
        nominal = min(1.0, k / n)
        chance = chance_recall(relevant, k)
        est = bootstrap(_mean_of(hits), n, samples)
        out[f"recall_at_{k}"] = est.to_dict()
        out[f"chance_recall_at_{k}"] = nominal
        out[f"chance_recall_at_{k}_with_repeats"] = chance
        out[f"recall_at_{k}_over_chance"] = _ratio(est, nominal)
        out[f"recall_at_{k}_over_chance_with_repeats"] = _ratio(est, chance)
    gains = ndcg(sims, relevant, 10)
    out["ndcg_at_10"] = bootstrap(_mean_of(gains), n, samples).to_dict()
    return out


def _ratio(est: Estimate, chance: float) -> dict[str, float | int]:
    return Estimate(
        est.value / chance, est.low / chance, est.high / chance, est.replicates
    ).to_dict()


def _auc_of(y: np.ndarray, p: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda s: auc(y[s], p[s])


def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda s: float(values[s].mean())
