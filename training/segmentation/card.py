"""The model card (``MODEL_CARD.md``) of a segmentation package: data, licence, figures, how
to reproduce, and what the figures mean (agreement with TotalSegmentator's labels)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.segmentation.config import SegmentationTrainConfig

NOT_FOR_CLINICAL_USE = (
    "**Not for clinical use.** A research model trained on one public CT volume; its label "
    "maps must not inform the care of any patient."
)
DATA_LICENCE = (
    "TotalSegmentator's test files (`../shared/data/ct-totalsegmentator`), Apache-2.0. Their "
    "labels are TotalSegmentator's own output (a model's), not manual annotation."
)


def write_segmentation_card(
    folder: Path, results: dict[str, Any], config: SegmentationTrainConfig
) -> Path:
    """Write ``MODEL_CARD.md`` into the package ``folder`` from its evaluation ``results``."""
    from training.segmentation.workflow import result_lines

    training = results.get("training", {})
    package = results.get("package", {})
    model = config.model
    lines = [
        f"# Model card: {config.name} version {package.get('version', folder.name)}",
        "",
        NOT_FOR_CLINICAL_USE,
        "",
        "## Model",
        "",
        f"- Task: CT organ segmentation, {len(model.labels)} structures of the label catalogue "
        f"`{config.catalogue.name}` (TotalSegmentator v2 `total` class ids, SNOMED CT codes).",
        f"- Network: MONAI {model.network} (initial filters {model.init_filters}), one CT "
        f"channel in, background + {len(model.labels)} channels out.",
        f"- Reading: orientation RAS, resampled to {' x '.join(map(str, model.spacing))} mm, "
        f"HU {model.hu_range[0]:g}..{model.hu_range[1]:g} scaled to [0, 1]; sliding windows of "
        f"{' x '.join(map(str, model.roi_size))} voxels, overlap {model.overlap}, Gaussian "
        "blending; argmax to labels, then nearest neighbour back to the series' own grid "
        "through both affines.",
        f"- Content hash: `{package.get('content_hash', '')}`.",
        "",
        "## Data and licence",
        "",
        f"- {DATA_LICENCE}",
        f"- Trained on: {', '.join(training.get('train_volumes', []))} "
        f"(split `{config.data.train_split}`); evaluated on split `{config.data.dev_split}`: "
        + "; ".join(results.get("data", {}).get("read_summary", []))
        + ".",
        f"- Training: {training.get('steps')} steps of {config.optim.batch_size} crops "
        f"(Dice + cross-entropy, AdamW lr {config.optim.lr:g}, seed {config.optim.seed}), "
        f"{training.get('train_seconds')} s; final training loss "
        f"{training.get('final_train_loss')}.",
        "",
        "## Figures: agreement with TotalSegmentator",
        "",
        "Dice and 95% Hausdorff distance (mm) per structure on each evaluation volume's own "
        "grid (MONAI `DiceMetric`, `HausdorffDistanceMetric(percentile=95)`), after the node's "
        "own path (DICOM rebuild for a DICOM image, model, label map on the source grid). The "
        "reference labels are TotalSegmentator's output, so these figures measure agreement "
        "with TotalSegmentator, not accuracy. With one training volume this is a test of the "
        "pipeline and its geometry as much as of the model.",
        "",
        *result_lines(results),
        "",
        "## Reproduce",
        "",
        "```sh",
        f"vlnode train --config {_relative(config.source)}",
        f"vlnode evaluate --package <package> --data {_relative_archive(config)} "
        f"--split {config.data.dev_split}",
        "```",
        "",
    ]
    if config.card_notes:
        lines += ["## Notes", "", *(f"- {note}" for note in config.card_notes), ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _relative_archive(config: SegmentationTrainConfig) -> str:
    """The archive as seen from the repository (the folder above ``conf``), if it has one."""
    parts = config.source.parts
    if "conf" not in parts:
        return str(config.data.archive)
    return os.path.relpath(config.data.archive, Path(*parts[: parts.index("conf")]))


def _relative(path: Path) -> str:
    parts = path.parts
    return str(Path(*parts[parts.index("conf") :])) if "conf" in parts else str(path)
