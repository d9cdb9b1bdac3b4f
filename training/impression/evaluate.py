"""Evaluation of an impression package on an archive split (``vlnode evaluate``).

On every image with a target text: the generated impression and the retrieved training text
(the baseline), BLEU-4, ROUGE-L and CIDEr-D of both with case-level bootstrap intervals, and
the paired bootstrap interval of generator minus retrieval (the same resampled cases for
both). CIDEr-D's document frequencies are those of the whole evaluated set's references, held
fixed in every replicate (a replicate resamples the per-image scores).

The clinical check labels the texts with the rule-based labeller
(:mod:`training.evaluate.labeller`) for the findings of the package's catalogues and gives
**micro F1** (pooled over every image and finding; uncertain mentions count as present) of
the generated text against the reference text, and against what the findings model reads on
the same images (its group winners, and binary findings at their thresholds). Only micro F1
is reported, never macro or per-example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.impression.package import ImpressionPackage
from inference.packages import load_findings_package
from inference.zero_shot import build_classifier, score
from training.evaluate.labeller import Labeller, micro_f1
from training.evaluate.metrics import Estimate, IntArray, bootstrap, case_bootstrap_indices
from training.evaluate.text_metrics import bleu, cider_d_scores, rouge_l_scores
from training.impression.dataset import ImpressionSet


def text_figures(
    generated: Sequence[str],
    retrieved: Sequence[str],
    references: Sequence[str],
    case_ids: Sequence[str],
    replicates: int,
    seed: int,
) -> dict[str, Any]:
    """The three metrics of both systems and the paired differences, with intervals."""
    n = len(references)
    samples = case_bootstrap_indices(case_ids, replicates, seed)
    out: dict[str, Any] = {"n_images": n, "n_cases": len(set(case_ids))}
    per_text: dict[str, dict[str, np.ndarray]] = {}
    for system, texts in (("generator", generated), ("retrieval", retrieved)):
        per_text[system] = {
            "rouge_l": np.asarray(rouge_l_scores(texts, references)),
            "cider_d": np.asarray(cider_d_scores(texts, references)),
        }

        def corpus_bleu(idx: IntArray, texts: Sequence[str] = texts) -> float:
            return bleu([texts[i] for i in idx], [references[i] for i in idx])

        out[system] = {
            "bleu_4": bootstrap(corpus_bleu, n, samples).to_dict(),
            "rouge_l": _mean(per_text[system]["rouge_l"], samples).to_dict(),
            "cider_d": _mean(per_text[system]["cider_d"], samples).to_dict(),
            "mean_words": float(np.mean([len(t.split()) for t in texts])) if n else 0.0,
        }
    difference: dict[str, Any] = {}
    for metric in ("rouge_l", "cider_d"):
        delta = per_text["generator"][metric] - per_text["retrieval"][metric]
        estimate = _mean(delta, samples)
        replicate_means = [float(delta[s].mean()) for s in samples]
        difference[metric] = {
            **estimate.to_dict(),
            "p_no_gain": float(np.mean([v <= 0 for v in replicate_means])),
        }

    def bleu_gain(idx: IntArray) -> float:
        refs = [references[i] for i in idx]
        return bleu([generated[i] for i in idx], refs) - bleu([retrieved[i] for i in idx], refs)

    difference["bleu_4"] = bootstrap(bleu_gain, n, samples).to_dict()
    out["generator_minus_retrieval"] = difference
    return out


def _mean(values: np.ndarray, samples: list[IntArray]) -> Estimate:
    def metric(idx: IntArray) -> float:
        return float(values[idx].mean()) if len(idx) else float("nan")

    return bootstrap(metric, len(values), samples)


def findings_positives(package: Path, images: torch.Tensor) -> list[set[str]]:
    """What a findings package reads on each image: its group winners, and its binary
    findings at or above their thresholds (as the node's SR states them)."""
    findings = load_findings_package(package)
    classifier = build_classifier(
        findings.catalogue, findings.embed_texts, float(findings.model.scale().detach())
    )
    with torch.no_grad():
        scores = score(classifier, findings.embed_images(images))
    out: list[set[str]] = [set() for _ in range(images.shape[0])]
    for members in findings.catalogue.groups().values():
        columns = torch.stack([scores.column(f.name) for f in members], dim=1)
        for i, k in enumerate(columns.argmax(1).tolist()):
            out[i].add(members[k].name)
    for finding in findings.catalogue.binary():
        for i, p in enumerate(scores.column(finding.name).tolist()):
            if p >= finding.threshold:
                out[i].add(finding.name)
    return out


def clinical_figures(
    labeller: Labeller,
    texts: dict[str, Sequence[str]],
    references: Sequence[str],
    case_ids: Sequence[str],
    findings_read: list[set[str]] | None,
    replicates: int,
    seed: int,
) -> dict[str, Any]:
    """Micro F1 of each system's labels against the reference text's (and the findings
    model's), with case-level bootstrap intervals; overall and per catalogue group."""
    samples = case_bootstrap_indices(case_ids, replicates, seed)
    reference_labels = [labeller.positives(t) for t in references]
    groups: dict[str, list[str]] = {}
    for f in labeller.findings:
        groups.setdefault(f.group or "binary", []).append(f.name)
    judges: dict[str, list[set[str]]] = {"reference text": reference_labels}
    if findings_read is not None:
        judges["findings model"] = findings_read
    out: dict[str, Any] = {
        "f1": "micro (pooled over images and findings); uncertain mentions count as present",
        "findings": list(labeller.names),
        "mentioned_by_reference": float(np.mean([bool(r) for r in reference_labels])),
    }
    systems = {name: [labeller.positives(t) for t in ts] for name, ts in texts.items()}
    systems["reference text"] = reference_labels
    for judge, truth in judges.items():
        table: dict[str, Any] = {}
        for system, labels in systems.items():
            if system == judge:
                continue
            row: dict[str, Any] = {}
            for group, names in (("all", list(labeller.names)), *groups.items()):
                row[group] = _f1_estimate(labels, truth, names, samples)
            table[system] = row
        out[f"against {judge}"] = table
    return out


def _f1_estimate(
    labels: list[set[str]], truth: list[set[str]], names: list[str], samples: list[IntArray]
) -> dict[str, Any]:
    def metric(idx: IntArray) -> float:
        return micro_f1([labels[i] for i in idx], [truth[i] for i in idx], names).f1

    agreement = micro_f1(labels, truth, names)
    return {
        **bootstrap(metric, len(labels), samples).to_dict(),
        "tp": agreement.true_positive,
        "fp": agreement.false_positive,
        "fn": agreement.false_negative,
    }


def evaluate_impressions(
    package: ImpressionPackage,
    data: ImpressionSet,
    catalogues: Sequence[Path],
    findings_package: Path | None,
    replicates: int,
    seed: int,
    examples: int = 10,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every figure of one package on one split's images (see the module docstring)."""
    if not data.records:
        raise ValueError(f"no image with a target text to evaluate ({data.summary.source})")
    grid, pooled = package.features(data.images)
    sources = [r.key for r in data.records]
    if progress:
        progress(f"generating {len(sources)} impressions")
    generated = package.describe(grid, pooled, sources)
    retrieved = package.retrieve(pooled)
    references = list(data.targets)
    case_ids = data.case_ids
    results: dict[str, Any] = {
        "generator": "retrieval only" if not package.model.generates else "beam search",
        "text": text_figures(generated, retrieved, references, case_ids, replicates, seed),
    }
    present = [c for c in catalogues if c.is_file()]
    if present:
        labeller = Labeller.from_catalogues(present)
        read = (
            findings_positives(findings_package, data.images)
            if findings_package is not None and findings_package.is_dir()
            else None
        )
        results["clinical"] = clinical_figures(
            labeller,
            {"generator": generated, "retrieval": retrieved},
            references,
            case_ids,
            read,
            replicates,
            seed,
        )
        results["clinical"]["catalogues"] = [c.name for c in present]
        results["clinical"]["findings_package"] = str(findings_package) if read else None
    else:
        results["clinical"] = {
            "skipped": f"no catalogue found among {[str(c) for c in catalogues]}"
        }
    step = max(1, len(references) // max(1, examples))
    picked = list(range(0, len(references), step))[:examples]
    results["examples"] = [
        {
            "image": sources[i],
            "truth": references[i],
            "generated": generated[i],
            "retrieved": retrieved[i],
        }
        for i in picked
    ]
    return results
