"""Evaluation results as files: ``metrics.json``, ROC plots (PNG) and the Markdown model card."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

NOT_FOR_CLINICAL_USE = (
    "**Not for clinical use.** This is a research model trained on a few hundred public "
    "teaching images; its outputs must not inform the care of any patient."
)


def read_targets(catalogue: Path) -> dict[str, float]:
    """Acceptance targets of a catalogue (``[targets]``: dotted metric path = minimum)."""
    raw = tomllib.loads(catalogue.read_text(encoding="utf-8"))
    return {str(k): float(v) for k, v in raw.get("targets", {}).items()}


def lookup(results: dict[str, Any], dotted: str) -> float | None:
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        node = node.get("value")
    return float(node) if isinstance(node, int | float) else None


def check_targets(results: dict[str, Any], targets: dict[str, float]) -> dict[str, Any]:
    out = {}
    for key, minimum in targets.items():
        value = lookup(results, key)
        out[key] = {
            "target": minimum,
            "value": value,
            "met": value is not None and value >= minimum,
        }
    return out


def fmt(entry: Any) -> str:
    if isinstance(entry, dict) and "value" in entry:
        lo, hi = entry.get("ci_low", math.nan), entry.get("ci_high", math.nan)
        return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}]"
    if isinstance(entry, float):
        return f"{entry:.3f}"
    return str(entry)


def plot_roc(roc: dict[str, Any], folder: Path) -> list[str]:
    """One PNG per group: the one-vs-rest ROC curve of each class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    names = []
    for group, (labels, probs, classes) in roc.items():
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for k, c in enumerate(classes):
            y = labels == k
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = roc_curve(y, probs[:, k])
            ax.plot(fpr, tpr, label=c)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"zero-shot {group} (one vs rest)")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        name = f"roc_{group}.png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names


def results_json(results: dict[str, Any]) -> dict[str, Any]:
    """The results without the private ROC arrays, JSON-ready."""
    clean = {k: v for k, v in results.items() if not k.startswith("_")}
    out: dict[str, Any] = json.loads(json.dumps(clean, default=_json_default))
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def metric_lines(results: dict[str, Any]) -> list[str]:
    """Markdown table rows (also printed by ``vlnode evaluate``)."""
    lines = ["| metric | value [95% CI] |", "|---|---|"]
    for group, g in results.get("groups", {}).items():
        lines.append(f"| {group}: accuracy (n={g['n']}) | {fmt(g['accuracy'])} |")
        lines.append(f"| {group}: balanced accuracy | {fmt(g['balanced_accuracy'])} |")
        lines.append(f"| {group}: majority-class baseline | {g['majority_baseline']:.3f} |")
        lines.append(f"| {group}: macro one-vs-rest AUC | {fmt(g['macro_auc'])} |")
        for c, v in g["per_class_auc"].items():
            lines.append(f"| {group}: AUC {c} ({g['class_counts'][c]} images) | {fmt(v)} |")
    for name, f in results.get("findings", {}).items():
        lines.append(f"| {name}: AUC ({f['positives']} positive of {f['n']}) | {fmt(f['auc'])} |")
    r = results.get("retrieval")
    if r:
        for k in (1, 5, 10):
            lines.append(
                f"| image→caption recall@{k} (chance k/N {r[f'chance_recall_at_{k}']:.3f}, "
                f"with repeats {r[f'chance_recall_at_{k}_with_repeats']:.3f}) | "
                f"{fmt(r[f'recall_at_{k}'])} |"
            )
        lines.append(f"| recall@10 / chance (k/N) | {fmt(r['recall_at_10_over_chance'])} |")
        lines.append(
            f"| recall@10 / chance with repeats | "
            f"{fmt(r['recall_at_10_over_chance_with_repeats'])} |"
        )
        lines.append(f"| NDCG@10 | {fmt(r['ndcg_at_10'])} |")
    return lines


def target_lines(checks: dict[str, Any]) -> list[str]:
    lines = ["| target | minimum | measured | met |", "|---|---|---|---|"]
    for key, c in checks.items():
        if c["value"] is None:  # the data has no labels for it (another archive's layout)
            value, met = "n/a", "not measured"
        else:
            value, met = f"{c['value']:.3f}", "yes" if c["met"] else "NO"
        lines.append(f"| {key} | {c['target']} | {value} | {met} |")
    return lines


def write_card(folder: Path, sections: dict[str, Any]) -> Path:
    """Write ``MODEL_CARD.md`` from the named sections (see :func:`training.cli_flow`)."""
    out = [f"# Model card: {sections['name']} version {sections['version']}", ""]
    out += [NOT_FOR_CLINICAL_USE, ""]
    for title, body in sections["parts"]:
        out += [f"## {title}", "", *body, ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def probe_lines(probe: dict[str, Any]) -> list[str]:
    """Markdown rows of the label-efficiency probe."""
    lines = [
        "| labels | fraction (labels) | pretrained AUC | random-init AUC | difference [95% CI] "
        "| P(no gain) | spread over subsets |",
        "|---|---|---|---|---|---|---|",
    ]
    for column, task in probe.get("tasks", {}).items():
        if "fractions" not in task:
            lines.append(f"| {column} | skipped: {task.get('skipped')} | | | | | |")
            continue
        for fraction, f in task["fractions"].items():
            lines.append(
                f"| {column} | {fraction} ({f['labels_used']}) | {f['pretrained_auc']:.3f} | "
                f"{f['random_auc']:.3f} | {f['difference']:+.3f} [{f['difference_ci_low']:+.3f}, "
                f"{f['difference_ci_high']:+.3f}] | {f['p_no_gain']:.3f} | "
                f"{f['pretrained_subset_spread']:.3f} |"
            )
    for fraction, f in probe.get("macro", {}).items():
        lines.append(
            f"| macro over tasks | {fraction} | {f['pretrained_auc']:.3f} | {f['random_auc']:.3f} "
            f"| {f['difference']:+.3f} [{f['difference_ci_low']:+.3f}, "
            f"{f['difference_ci_high']:+.3f}] | {f['p_no_gain']:.3f} | "
            f"{f['pretrained_subset_spread']:.3f} |"
        )
    return lines
