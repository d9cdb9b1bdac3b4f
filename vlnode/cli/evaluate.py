"""``vlnode evaluate``: a model package's metrics on a data folder's split, by its task.

Findings packages: zero-shot and retrieval metrics (and the linear probe); impression and
segmentation packages: their own workflow's metrics (:mod:`training.tasks`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model package (findings, impression, segmentation) on a data folder",
        description=(
            "Evaluate a package on a split, by the task its manifest names. Findings: score "
            "every image zero-shot with the package's finding catalogue and report per-finding "
            "and macro AUC, accuracy against the majority baseline, and image-to-caption "
            "retrieval, each with a case-level bootstrap 95%% interval (any folder in the "
            "MedPix, cxr-covid-notes or cxr-nih1000 layout). Impression and segmentation "
            "packages report their own metrics (see training/README.md)."
        ),
    )
    parser.add_argument("--package", required=True, metavar="DIR", help="model package folder")
    parser.add_argument("--data", required=True, metavar="DIR", help="archive folder")
    parser.add_argument("--split", metavar="NAME", help="split to evaluate (default: all rows)")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="write results here")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap replicates (1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    parser.add_argument("--plots", metavar="DIR", help="write ROC plots (PNG) into this folder")
    parser.add_argument(
        "--probe",
        action="append",
        metavar="COLUMN",
        help="also run the linear-probe label-efficiency protocol on this label column "
        "(repeatable), trained on --probe-train-split and judged on --split",
    )
    parser.add_argument("--probe-train-split", default="train", metavar="NAME")
    parser.add_argument(
        "--probe-features",
        choices=("final", "stages"),
        default="final",
        help="probe features: the encoder's output (final, default) or the average-pooled "
        "output of each ResNet stage side by side (stages); the same for the random inits",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from inference.packages import PackageError, read_manifest
    from training.archive import ArchiveError
    from training.tasks import UnknownTaskError, workflow

    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.bootstrap < 1:
        print("vlnode evaluate: --bootstrap must be at least 1", file=sys.stderr)
        return 2
    try:
        task = read_manifest(Path(args.package)).task
        module = workflow(task)
    except (PackageError, UnknownTaskError) as exc:
        print(f"vlnode evaluate: {exc}", file=sys.stderr)
        return 1
    if task != "findings" and (args.probe or args.plots):
        print(
            f"vlnode evaluate: --probe and --plots are for findings packages, not {task}",
            file=sys.stderr,
        )
        return 2
    try:
        results = module.evaluate_package(
            Path(args.package), Path(args.data), args.split, args.bootstrap, args.seed
        )
    except (PackageError, ArchiveError, OSError, ValueError) as exc:
        print(f"vlnode evaluate: {exc}", file=sys.stderr)
        return 1
    for line in results["data"]["read_summary"]:
        print(line, file=sys.stderr)
    if task == "findings":
        clean = _findings_extras(args, results)
        if clean is None:
            return 2
    else:
        from training.evaluate.card import results_json

        clean = results_json(results)
        pkg = clean["package"]
        print(f"{pkg['name']} version {pkg['version']} on {args.data} split {args.split or 'all'}:")
        print("\n".join(module.result_lines(results)))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    return 0


def _findings_extras(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any] | None:
    """Print a findings evaluation with its ROC plots and linear probe; None on a usage error."""
    from training.evaluate.card import (
        metric_lines,
        plot_roc,
        probe_lines,
        results_json,
        target_lines,
    )

    if args.plots:
        folder = Path(args.plots)
        folder.mkdir(parents=True, exist_ok=True)
        plot_roc(results.get("_roc", {}), folder)
    clean = results_json(results)
    pkg = clean["package"]
    print(f"{pkg['name']} version {pkg['version']} on {args.data} split {args.split or 'all'}:")
    print("\n".join(metric_lines(clean)))
    if clean.get("targets"):
        print("\n".join(target_lines(clean["targets"])))
    if args.probe:
        from training.workflow import plot_probe, probe_package

        if not args.split:
            print("vlnode evaluate: --probe needs --split", file=sys.stderr)
            return None
        probe = probe_package(
            Path(args.package),
            Path(args.data),
            args.probe_train_split,
            args.split,
            args.probe,
            replicates=args.bootstrap,
            features=args.probe_features,
        )
        clean["linear_probe"] = probe
        print("\n".join(probe_lines(probe)))
        if args.plots:
            plot_probe(probe, Path(args.plots))
    return clean
