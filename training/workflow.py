"""The findings task's work for ``vlnode train`` and ``vlnode evaluate`` (see
:mod:`training.tasks`), apart from argument parsing: train → package → evaluate → card."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from inference.packages import ENTITIES, load_findings_package
from training.archive import detect_layout, is_dicom_archive
from training.config import TrainConfig
from training.distributed import setup, teardown
from training.evaluate.card import (
    check_targets,
    metric_lines,
    plot_roc,
    probe_lines,
    read_targets,
    results_json,
    target_lines,
    write_card,
)
from training.evaluate.zero_shot_eval import embed_split, evaluate_zero_shot
from training.fit import train
from training.package import reserve_version, write_package
from training.tasks import TrainOutcome


def train_and_package(
    config: TrainConfig,
    models_root: Path,
    run_dir: Path,
    progress: bool = True,
    evaluate: bool = True,
    replicates: int = 1000,
) -> TrainOutcome:
    """Train, write a new package version under ``models_root/<name>/``, evaluate it on dev."""
    ctx = setup()
    try:
        result = train(config, run_dir, ctx, progress=progress)
    finally:
        teardown()
    if not ctx.is_main:
        return TrainOutcome(None, config.name, "", "", {})
    for summary in result.summary:
        for line in summary.lines():
            print(line, file=sys.stderr)
    destination = reserve_version(models_root, config.name)
    version = destination.name
    training_info = {
        "config": str(config.source),
        "archive": config.data.archive.name,
        "train_split": config.data.train_split,
        "dev_split": config.data.dev_split,
        "train_records": result.train_records,
        "text_views": [list(v) for v in config.data.text_views],
        "entity_view": (
            {
                "lexicon": config.data.entity_lexicon.name,
                "sections": list(config.data.entity_sections),
                "loss_weight": config.optim.entity_loss_weight,
            }
            if config.data.entity_lexicon is not None
            else None
        ),
        "best_epoch": result.best_epoch,
        "best_dev_loss": result.best_dev_loss,
        "epochs": config.optim.epochs,
        "seed": config.optim.seed,
        "seconds": round(result.seconds, 1),
        "precision": result.precision,
        "run_dir": str(run_dir),
        "skipped": [s.to_dict() for s in result.summary],
    }
    manifest = write_package(
        destination,
        config.name,
        version,
        config.task,
        result.model,
        result.tokenizer,
        config.catalogue,
        extra={"training": training_info},
        entity_lexicon=config.data.entity_lexicon if config.data.embed_entity_view else None,
    )
    results: dict[str, Any] = {}
    if evaluate and config.data.dev_split:
        results = evaluate_package(
            destination, config.data.archive, config.data.dev_split, replicates=replicates
        )
        if config.probe_columns:
            results["linear_probe"] = probe_package(
                destination,
                config.data.archive,
                config.data.train_split,
                config.data.dev_split,
                list(config.probe_columns),
                replicates=replicates,
            )
        write_package_card(destination, results, config, replicates)
    return TrainOutcome(destination, config.name, version, manifest.content_hash, results)


def result_lines(results: dict[str, Any]) -> list[str]:
    """What ``vlnode train`` and ``vlnode evaluate`` print: the metric table and the targets."""
    clean = results_json(results)
    lines = metric_lines(clean)
    if clean.get("targets"):
        lines += target_lines(clean["targets"])
    return lines


def evaluate_package(
    package: Path, data: Path, split: str | None, replicates: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Zero-shot and retrieval metrics of a package on a data folder's split."""
    model = load_findings_package(package)
    embedded = embed_split(model, data, split)
    results = evaluate_zero_shot(model, embedded, replicates=replicates, seed=seed)
    targets = read_targets(package / "catalogue.toml")
    results["targets"] = check_targets(results, targets)
    results["package"] = {
        "path": str(package),
        "name": model.manifest.name,
        "version": model.manifest.version,
        "content_hash": model.manifest.content_hash,
    }
    results["data"] = {
        "folder": str(data),
        "split": split,
        "read_summary": list(embedded.summary_lines),
    }
    results["evaluated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def write_package_card(
    package: Path, results: dict[str, Any], config: TrainConfig, replicates: int
) -> None:
    """metrics.json, ROC plots and MODEL_CARD.md inside the package (documentation files)."""
    plots = plot_roc(results.get("_roc", {}), package)
    probe = results.get("linear_probe")
    probe_plots = plot_probe(probe, package) if probe else []
    clean = results_json(results)
    (package / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    manifest = json.loads((package / "package.json").read_text(encoding="utf-8"))
    info = manifest["extra"]["training"]
    if is_dicom_archive(config.data.archive):
        layout_name, licence = "DICOM studies + reports", "as stated by the archive's owner"
    else:
        layout = detect_layout(config.data.archive)
        layout_name, licence = layout.name, layout.licence
    text = config.model.text
    extra = [p.name for p in config.data.extra_text]
    extra_desc = f" and {', '.join(extra)} (text only)" if extra else ""
    text_desc = (
        f"pretrained `{text.pretrained}` (all-MiniLM-L6-v2, Apache-2.0), "
        + (
            "frozen, with a trained projection"
            if text.frozen
            else f"top {text.trainable_layers} layer(s) trained"
        )
        if text.source == "pretrained"
        else f"BERT from configuration ({text.num_layers} layers, hidden {text.hidden_size}), "
        f"WordPiece vocabulary of {text.vocab_size} trained on the archive text"
        + extra_desc
        + (
            f"; masked-language pretraining for {config.optim.mlm_epochs} epochs on the "
            "training text" + extra_desc + " before the contrastive training"
            if config.optim.mlm_epochs
            else ""
        )
    )
    img = config.model.image
    r = clean.get("retrieval", {})
    parts: list[tuple[str, list[str]]] = [
        (
            "Intended use",
            [
                "Research and development of the vlnode findings pipeline: zero-shot scores of "
                "the findings in the catalogue (`catalogue.toml`) and text-to-image search.",
            ],
        ),
        (
            "Training data",
            [
                f"- Archive: `{layout_name}` layout, split `{info['train_split']}` "
                f"({info['train_records']} image/text pairs).",
                f"- Licence of the data: {licence}.",
                f"- Training text (free text only): views {info['text_views']}, one sampled per "
                "image and epoch"
                + (
                    (
                        ", and an entity view"
                        if not info["entity_view"].get("loss_weight")
                        else "; and in every step a second image-text loss (weight "
                        f"{info['entity_view']['loss_weight']}) against an entity view"
                    )
                    + ": the radiology terms named in "
                    f"{info['entity_view']['sections']}, found with the lexicon "
                    f"`{info['entity_view']['lexicon']}` "
                    "(KAD's entity extraction as a word lookup in the free text)"
                    if info.get("entity_view")
                    else ""
                )
                + ". The archive's label columns (for MedPix `modality`, `plane`, "
                "`location`, `location_category`) are never put into the training text and "
                "never used as training targets: they judge the zero-shot scores below.",
                "- Text encoder: all-MiniLM-L6-v2, Apache-2.0 (sentence-transformers)."
                if text.source == "pretrained"
                else "- Text encoder trained from scratch on this archive's text"
                + (
                    f" and on {', '.join(extra)} (text only"
                    + ("; Open-i / NLM" if any("iu-xray" in e for e in extra) else "")
                    + ")."
                    if extra
                    else "."
                ),
            ],
        ),
        (
            "Model",
            [
                f"- Image encoder: MONAI {img.architecture} ({img.spatial_dims}D, input "
                f"{'x'.join(map(str, img.image_size))}, layers {list(img.layers)}, widths "
                f"{list(img.widths)}, first stride {img.conv1_t_stride})"
                + (
                    "; the members' own input sizes, in member order: "
                    + ", ".join("x".join(map(str, s)) for s in config.model.member_image_sizes)
                    + " (each resamples the prepared input to its size)."
                    if config.model.member_image_sizes
                    else "."
                ),
                f"- Text encoder: {text_desc}.",
                f"- Shared embedding: {config.model.embed_dim} dimensions; learnable temperature.",
                *(
                    [
                        "- Text embedding: a text that names radiology entities (a prompt, a "
                        "caption, a search query) is embedded as the normalised mean of its own "
                        "embedding and that of its entity view, found with the lexicon the "
                        "model was trained with (shipped as `entities.toml`): the two views the "
                        "model learnt to match, combined like a prompt ensemble."
                    ]
                    if ENTITIES in manifest["files"]
                    else []
                ),
                *(
                    [
                        f"- Ensemble of {config.model.members} such dual encoders, trained one "
                        f"after the other by the same command with seeds {info['seed']} to "
                        f"{info['seed'] + config.model.members - 1} (each exactly the single run "
                        "of that seed); the frozen text encoder is shared. The embedding is the "
                        "members' unit embeddings side by side divided by the square root of "
                        "their number, so a similarity is the mean of the members' similarities; "
                        "zero-shot logits use their mean temperature. The linear probe reads the "
                        "members' image features side by side, against as many random encoders "
                        "per initialisation."
                    ]
                    if config.model.members > 1
                    else []
                ),
                f"- Content hash: `{manifest['content_hash']}`.",
            ],
        ),
        (
            "Training",
            [
                f"- Command: `vlnode train --config {Path(info['config']).name}` "
                f"(seed {info['seed']}, {info['epochs']} epochs, {info['seconds']:.0f} s on "
                "the machine that trained it).",
                f"- Arithmetic: {info.get('precision', 'float32')} in training; the package "
                "stores the weights as float16 (its figures are measured on those).",
                (
                    f"- Model selection: the epoch with the lowest dev contrastive loss (epoch "
                    f"{info['best_epoch']}), a label-free criterion; dev labels were not used."
                    if config.optim.select == "dev_loss"
                    else f"- No model selection: the weights after the last epoch "
                    f"({info['epochs']}), fixed in advance; dev labels were not used."
                    + (
                        f" The weights are an exponential moving average over the training "
                        f"steps (decay {config.optim.ema_decay} per step)."
                        if config.optim.ema_decay > 0
                        else ""
                    )
                ),
            ],
        ),
        (
            f"Evaluation on `{info['dev_split']}` (zero-shot)",
            [
                "Intervals: 95% percentile bootstrap over cases (every image of a resampled case "
                f"comes along), {replicates} replicates.",
                "",
                *metric_lines(clean),
                "",
                (
                    f"Retrieval: {r.get('n_queries', 0)} dev images ranked against all dev "
                    f"captions; {r.get('repeated_captions', 0)} captions repeat another one "
                    "verbatim, so a retrieved caption identical to the true one counts as a hit "
                    "and chance is computed with the repeats."
                )
                if r
                else "",
                "",
                *target_lines(clean.get("targets", {})),
                "",
                *[f"![ROC {p}]({p})" for p in plots],
            ],
        ),
        (
            "Data efficiency (linear probe)",
            [
                "Protocol, fixed before any result was seen: logistic regression (C = 1, not "
                "tuned) on standardised frozen image-encoder features (BatchNorm in eval mode), "
                "trained on 10% (5 fixed stratified label subsets) and 100% of the training "
                "split's labels, against the same architecture from 5 random initialisations; "
                "macro one-vs-rest AUC on dev; the difference with a paired case-level "
                "bootstrap 95% interval, and the spread over label subsets beside it. The "
                "probe's labels were never seen by the contrastive training.",
                "",
                *probe_lines(probe),
                "",
                *[f"![label efficiency]({p})" for p in probe_plots],
            ]
            if probe
            else ["Not run for this package (`[evaluate] probe` in the training config)."],
        ),
        ("Notes", [f"- {note}" for note in config.card_notes] or ["None."]),
        (
            "Limitations",
            [
                "- Trained on a few hundred teaching-file images with short captions; zero-shot "
                "scores reflect which words the captions and case texts use, not a clinical "
                "reading.",
                "- Scores are softmax probabilities at the learned temperature; they are not "
                "calibrated on any clinical population.",
            ],
        ),
    ]
    write_card(package, {"name": manifest["name"], "version": manifest["version"], "parts": parts})


def probe_package(
    package: Path,
    data: Path,
    train_split: str,
    eval_split: str,
    columns: list[str],
    replicates: int = 1000,
    min_eval_per_class: int = 10,
    features: str = "final",
) -> dict[str, Any]:
    """The label-efficiency linear probe of a package's image encoder against random inits.

    Classes of a column are its values with at least ``min_eval_per_class`` evaluation images
    (for MedPix plane: axial, coronal, sagittal), fixed by that rule before any probe runs.
    """
    from training.archive import read_archive
    from training.datasets import load_images
    from training.evaluate.linear_probe import ProbeTask, run_probe

    model = load_findings_package(package)
    config = model.config.image
    train = read_archive(data, split=train_split, require_text=False)
    test = read_archive(data, split=eval_split, require_text=False)
    train_set = load_images(train.records, config, train.summary)
    test_set = load_images(test.records, config, test.summary)
    tasks = []
    for column in columns:
        counts: dict[str, int] = {}
        for r in test_set.records:
            value = r.label(column)
            if value:
                counts[value] = counts.get(value, 0) + 1
        classes = tuple(sorted(v for v, n in counts.items() if n >= min_eval_per_class))
        tasks.append(ProbeTask(column=column, classes=classes))
    result = run_probe(
        model.model.image_encoders,
        train_set.images,
        train_set.records,
        test_set.images,
        test_set.records,
        tasks,
        replicates=replicates,
        features=features,
    )
    result["train_split"], result["eval_split"] = train_split, eval_split
    return result


def plot_probe(result: dict[str, Any], folder: Path) -> list[str]:
    """Label-efficiency plot: probe macro AUC against the fraction of labels, per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for column, task in result["tasks"].items():
        if "fractions" not in task:
            continue
        fractions = sorted(task["fractions"], key=float)
        xs = [float(f) for f in fractions]
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for key, label in (("pretrained_auc", "pretrained"), ("random_auc", "random init")):
            ax.plot(xs, [task["fractions"][f][key] for f in fractions], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training labels")
        ax.set_ylabel("probe macro AUC")
        ax.set_title(f"linear probe: {column}")
        ax.legend()
        fig.tight_layout()
        name = f"label_efficiency_{column}.png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names
