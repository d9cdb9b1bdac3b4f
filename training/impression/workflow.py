"""The impression task's commands: train → package → evaluate → card (``vlnode train``), and
``vlnode evaluate`` of an impression package."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from inference.impression.model import language_model_hash
from inference.impression.package import CONFIG, TOKENIZER, WEIGHTS, load_impression_package
from training.evaluate.card import results_json
from training.impression.card import write_impression_card
from training.impression.config import ImpressionTrainConfig
from training.impression.dataset import read_impression_set
from training.impression.evaluate import evaluate_impressions
from training.impression.fit import ImpressionTrainResult, train_impression
from training.package import reserve_version, weights_bytes, write_package_folder
from training.tasks import TrainOutcome


def _portable(path: Path | None) -> str | None:
    """A path relative to the working folder when it lies inside it (a committed package
    then finds its catalogue from the repository root), else absolute."""
    if path is None:
        return None
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def write_impression_package(
    destination: Path, config: ImpressionTrainConfig, result: ImpressionTrainResult
) -> Any:
    """The package folder of a trained model (see :mod:`inference.impression.package`)."""
    model, tokenizer = result.model, result.tokenizer

    def write_files(folder: Path) -> list[str]:
        names = [CONFIG, WEIGHTS]
        (folder / CONFIG).write_text(
            json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        (folder / WEIGHTS).write_bytes(weights_bytes(model.trained_state()))
        if tokenizer is not None:
            tokenizer.save(folder / TOKENIZER)
            names.append(TOKENIZER)
        names += result.bank.save(folder)
        return names

    d = config.model.decoder
    reference = (
        {"pretrained": d.language_model, "sha256": language_model_hash(d.language_model)}
        if d.kind == "qformer"
        else None
    )
    info = {
        "config": str(config.source),
        "archive": config.data.archive.name,
        "train_split": config.data.train_split,
        "dev_split": config.data.dev_split,
        "target_sections": list(config.data.target_sections),
        "train_records": result.train_records,
        "epochs": config.optim.epochs,
        "seed": config.optim.seed,
        "seconds": round(result.seconds, 1),
        "image_encoder": {
            "findings_package": _portable(config.init.findings_package),
            "member": config.init.findings_member,
            "trained": config.optim.train_image_encoder,
        },
        "skipped": [s.to_dict() for s in result.summary],
    }
    evaluation = {
        "catalogues": [_portable(c) for c in config.evaluate.catalogues],
        "findings_package": _portable(config.evaluate.findings_package),
        "target_sections": list(config.data.target_sections),
        "examples": config.evaluate.examples,
    }
    return write_package_folder(
        destination,
        name=config.name,
        version=destination.name,
        task="impression",
        write_files=write_files,
        reference=reference,
        extra={"training": info, "evaluation": evaluation},
    )


def train_and_package(
    config: ImpressionTrainConfig,
    models_root: Path,
    run_dir: Path,
    progress: bool = True,
    evaluate: bool = True,
    replicates: int = 1000,
) -> TrainOutcome:
    """Train, write the next version under ``models_root/<name>/``, evaluate it on dev."""
    result = train_impression(config, run_dir, progress=progress)
    for summary in result.summary:
        for line in summary.lines():
            print(line, file=sys.stderr)
    destination = reserve_version(models_root, config.name)
    manifest = write_impression_package(destination, config, result)
    results: dict[str, Any] = {}
    if evaluate and config.data.dev_split:
        results = evaluate_package(
            destination, config.data.archive, config.data.dev_split, replicates=replicates
        )
        (destination / "metrics.json").write_text(
            json.dumps(results_json(results), indent=2) + "\n", encoding="utf-8"
        )
        write_impression_card(destination, results, config, replicates)
    return TrainOutcome(destination, config.name, destination.name, manifest.content_hash, results)


def evaluate_package(
    package: Path, data: Path, split: str | None, replicates: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Text metrics against the retrieval baseline and the clinical check on a split."""
    loaded = load_impression_package(package)
    evaluation = loaded.manifest.extra.get("evaluation", {})
    sections = tuple(evaluation.get("target_sections", ["caption"]))
    split_set = read_impression_set(data, split, sections, loaded.config.image)
    findings = evaluation.get("findings_package")
    results = evaluate_impressions(
        loaded,
        split_set,
        [Path(c) for c in evaluation.get("catalogues", [])],
        Path(findings) if findings else None,
        replicates=replicates,
        seed=seed,
        examples=int(evaluation.get("examples", 10)),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    results["package"] = {
        "path": str(package),
        "name": loaded.manifest.name,
        "version": loaded.manifest.version,
        "content_hash": loaded.manifest.content_hash,
    }
    results["data"] = {
        "folder": str(data),
        "split": split,
        "target_sections": list(sections),
        "read_summary": split_set.summary.lines(),
    }
    results["bootstrap"] = {"replicates": replicates, "seed": seed, "unit": "case"}
    results["evaluated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def _fmt(entry: dict[str, Any]) -> str:
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def result_lines(results: dict[str, Any]) -> list[str]:
    """What ``vlnode train`` and ``vlnode evaluate`` print for an impression package."""
    if not results:
        return ["no evaluation (no dev split)"]
    text = results["text"]
    lines = [
        f"{text['n_images']} images of {text['n_cases']} cases; 95% case-bootstrap intervals",
        "| metric | generator | retrieval baseline | generator - retrieval |",
        "|---|---|---|---|",
    ]
    for metric, label in (("bleu_4", "BLEU-4"), ("rouge_l", "ROUGE-L"), ("cider_d", "CIDEr-D")):
        diff = text["generator_minus_retrieval"][metric]
        lines.append(
            f"| {label} | {_fmt(text['generator'][metric])} | {_fmt(text['retrieval'][metric])} "
            f"| {diff['value']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] |"
        )
    clinical = results.get("clinical", {})
    if "skipped" in clinical:
        lines.append(f"clinical check skipped: {clinical['skipped']}")
        return lines
    lines.append(f"clinical check, F1 = {clinical['f1']}:")
    for judge in ("against reference text", "against findings model"):
        for system, row in clinical.get(judge, {}).items():
            parts = ", ".join(f"{group} {_fmt(v)}" for group, v in row.items())
            lines.append(f"- {system} {judge}: {parts}")
    return lines
