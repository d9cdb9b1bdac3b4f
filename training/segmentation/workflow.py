"""The segmentation task's work for ``vlnode train`` and ``vlnode evaluate`` (see
:mod:`training.tasks`): train → package → evaluate on the dev split → metrics and card.

A package records the splits of its configuration (image and label file names relative to the
archive) in its manifest, so ``vlnode evaluate --package P --data D --split dicom`` finds the
pair ``example_ct_dicom`` ↔ ``example_seg_dicom.nii.gz`` under any copy ``D`` of the archive.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from inference.packages import read_manifest
from inference.segmentation.package import load_segmentation_package
from training.archive.label_volumes import LabelPair, read_pairs
from training.evaluate.card import results_json
from training.package import reserve_version
from training.segmentation.card import write_segmentation_card
from training.segmentation.config import SegmentationTrainConfig
from training.segmentation.evaluate import evaluate_volumes
from training.segmentation.fit import train_segmentation
from training.segmentation.package import write_segmentation_package
from training.tasks import TrainOutcome

METRICS = "metrics.json"


def train_and_package(
    config: SegmentationTrainConfig,
    models_root: Path,
    run_dir: Path,
    progress: bool = True,
    evaluate: bool = True,
    replicates: int = 1000,
) -> TrainOutcome:
    """Train (resuming from ``run_dir``), write a new package version, evaluate it on dev.

    ``replicates`` is unused: the figures are per structure on each dev volume, with no
    bootstrap over so few volumes.
    """
    result = train_segmentation(config, run_dir, progress=progress)
    destination = reserve_version(models_root, config.name)
    training_info = {
        "config": str(config.source),
        "archive": config.data.archive.name,
        "train_split": config.data.train_split,
        "dev_split": config.data.dev_split,
        "train_volumes": list(result.train_volumes),
        "structures": list(config.data.structures),
        "epochs": config.optim.epochs,
        "steps": result.steps,
        "seed": config.optim.seed,
        "train_seconds": round(result.seconds, 1),
        "final_train_loss": round(result.final_loss, 6),
        "optim": asdict(config.optim),
        "augment": asdict(config.augment),
    }
    manifest = write_segmentation_package(
        destination,
        name=config.name,
        version=destination.name,
        network=result.network,
        config=config.model,
        catalogue=config.catalogue,
        extra={
            "training": training_info,
            "splits": {
                name: [asdict(pair) for pair in pairs] for name, pairs in config.data.splits.items()
            },
            "dice_targets": dict(config.dice_targets),
        },
    )
    results: dict[str, Any] = {"training": training_info}
    if evaluate and config.data.dev_split:
        results = evaluate_package(destination, config.data.archive, config.data.dev_split)
        results["training"] = training_info
        (destination / METRICS).write_text(
            json.dumps(results_json(results), indent=2) + "\n", encoding="utf-8"
        )
        write_segmentation_card(destination, results, config)
    return TrainOutcome(destination, config.name, destination.name, manifest.content_hash, results)


def evaluate_package(
    package: Path, data: Path, split: str | None, replicates: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Per-structure Dice and HD95 of ``package`` on a split its manifest names, read from
    ``data`` (``split`` None: the dev split of its training). ``replicates`` and ``seed`` are
    unused (no bootstrap)."""
    manifest = read_manifest(package)
    splits: dict[str, list[dict[str, str]]] = manifest.extra.get("splits", {})
    name = split or manifest.extra.get("training", {}).get("dev_split") or ""
    if name not in splits:
        raise ValueError(
            f"package {package} knows the splits {', '.join(sorted(splits)) or '(none)'}; "
            f"--split {name!r} is not one of them"
        )
    model = load_segmentation_package(package)
    pairs = tuple(LabelPair(**pair) for pair in splits[name])
    items = read_pairs(data, pairs)
    results = evaluate_volumes(model, items)
    targets: dict[str, float] = manifest.extra.get("dice_targets", {})
    results["targets"] = _check_targets(results, targets)
    results["package"] = {
        "path": str(package),
        "name": manifest.name,
        "version": manifest.version,
        "content_hash": manifest.content_hash,
    }
    results["data"] = {
        "folder": str(data),
        "split": name,
        "read_summary": [
            f"{item.image_file.name} ({'x'.join(map(str, item.volume.array.shape))} voxels, "
            f"{' x '.join(f'{s:.3g}' for s in item.volume.spacing)} mm) with "
            f"{item.labels_file.name}"
            for item in items
        ],
    }
    results["evaluated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def _check_targets(results: dict[str, Any], targets: dict[str, float]) -> dict[str, Any]:
    """Each target structure's Dice on every volume against its minimum."""
    checks: dict[str, Any] = {}
    for structure, minimum in targets.items():
        for volume in results["volumes"]:
            row = next((r for r in volume["structures"] if r["name"] == structure), None)
            value = None if row is None else row["dice"]
            checks[f"{volume['image']}: {structure} Dice"] = {
                "target": minimum,
                "value": value,
                "met": value is not None and value >= minimum,
            }
    return checks


def result_lines(results: dict[str, Any]) -> list[str]:
    """What the commands print: per volume, a row per structure, then the targets."""
    lines: list[str] = []
    for volume in results.get("volumes", []):
        lines += [
            f"{volume['image']} against {volume['labels']} (agreement with the reference labels)",
            "| structure | Dice | HD95 mm | reference mL | predicted mL |",
            "|---|---|---|---|---|",
        ]
        for r in volume["structures"]:
            lines.append(
                f"| {r['name']} | {_num(r['dice'])} | {_num(r['hd95_mm'], 1)} | "
                f"{r['reference_ml']:.1f} | {r['predicted_ml']:.1f} |"
            )
        lines.append(
            f"mean Dice over the {_count_both(volume)} structures present in both: "
            f"{_num(volume['mean_dice_present_in_both'])}; mean HD95 "
            f"{_num(volume['mean_hd95_mm_present_in_both'], 1)} mm"
        )
    for key, check in results.get("targets", {}).items():
        measured = "n/a" if check["value"] is None else f"{check['value']:.3f}"
        met = "yes" if check["met"] else "NO"
        lines.append(f"target {key} >= {check['target']}: {measured} (met: {met})")
    return lines


def _count_both(volume: dict[str, Any]) -> int:
    return sum(1 for r in volume["structures"] if r["in_reference"] and r["in_prediction"])


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"
