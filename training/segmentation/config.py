"""The segmentation training configuration (TOML, ``task = "segmentation"``) as frozen objects.

Layout (relative paths are relative to the file's folder, as in :mod:`training.config`)::

    task = "segmentation"
    name = "segmentation-ct-tiny"
    preset = "presets/tiny.toml"        # the [model] table (network, spacing, window, ...)
    catalogue = "totalsegmentator-v2.toml"
    [data]
    archive = "../../../shared/data/ct-totalsegmentator"
    structures = ["liver", "spleen", ...]   # catalogue names: the network's output channels
    train_split = "train"
    dev_split = "dicom"                 # evaluated after training ("" for none)
    [data.splits]
    train = [{image = "example_ct_sm.nii.gz", labels = "example_seg.nii.gz"}]
    dicom = [{image = "example_ct_dicom", labels = "example_seg_dicom.nii.gz"}]
    [optim]                             # SegmentationOptimConfig
    [augment]                           # training.segmentation.data.Augmentation
    [card]
    notes = ["..."]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inference.dicom_out.structures import CatalogueError, load_structures
from inference.segmentation.config import SegmentationConfigError, SegmentationModelConfig
from inference.toml_file import read_toml
from training.archive.label_volumes import LabelPair
from training.config import TrainConfigError, merge_tables, read_section
from training.segmentation.data import Augmentation

TASK = "segmentation"


@dataclass(frozen=True)
class SegmentationDataConfig:
    archive: Path = Path()
    structures: tuple[str, ...] = ()
    train_split: str = "train"
    dev_split: str = ""
    splits: dict[str, tuple[LabelPair, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentationOptimConfig:
    epochs: int = 20
    steps_per_epoch: int = 20
    batch_size: int = 2  # crops per step
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 10
    seed: int = 0
    num_threads: int = 2
    max_steps: int = 0  # >0: stop after this many steps (tests)


@dataclass(frozen=True)
class SegmentationTrainConfig:
    name: str
    task: str
    model: SegmentationModelConfig
    catalogue: Path
    data: SegmentationDataConfig
    optim: SegmentationOptimConfig
    augment: Augmentation = field(default_factory=Augmentation)
    source: Path = Path()
    card_notes: tuple[str, ...] = ()
    # Minimum Dice per structure name on every dev volume ([evaluate] dice_targets).
    dice_targets: dict[str, float] = field(default_factory=dict)


def load_segmentation_config(file: Path, raw: dict[str, Any]) -> SegmentationTrainConfig:
    """A segmentation configuration from its parsed TOML ``raw``; :class:`TrainConfigError`
    names the bad key."""
    base = file.parent
    allowed = {
        "name",
        "task",
        "preset",
        "model",
        "catalogue",
        "data",
        "optim",
        "augment",
        "evaluate",
        "card",
    }
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise TrainConfigError(f"{file}: unknown key(s) {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise TrainConfigError(f"{file}: name = {name!r}: letters, digits, - and _ only")
    if raw.get("task") != TASK:
        raise TrainConfigError(f"{file}: task = {raw.get('task')!r}: expected {TASK!r}")
    if not isinstance(raw.get("catalogue"), str):
        raise TrainConfigError(f"{file}: catalogue (a label catalogue file) is required")
    catalogue = (base / raw["catalogue"]).resolve()
    try:
        by_name = {s.name: s.label for s in load_structures(catalogue).values()}
    except CatalogueError as exc:
        raise TrainConfigError(f"{file}: catalogue: {exc}") from exc
    data = _data(raw.get("data", {}), base, file)
    missing = [s for s in data.structures if s not in by_name]
    if missing:
        raise TrainConfigError(
            f"{file}: data.structures: {', '.join(missing)} not in the catalogue {catalogue}"
        )
    model_data: dict[str, Any] = {}
    if "preset" in raw:
        model_data = read_toml(
            base / str(raw["preset"]), f"the preset of {file}:", TrainConfigError
        )
    model_data = merge_tables(model_data, raw.get("model", {}))
    if "labels" in model_data:
        raise TrainConfigError(f"{file}: model.labels comes from data.structures; remove it")
    model_data["labels"] = [by_name[s] for s in data.structures]
    try:
        model = SegmentationModelConfig.from_dict(model_data)
    except SegmentationConfigError as exc:
        raise TrainConfigError(f"{file}: {exc}") from exc
    optim = read_section(SegmentationOptimConfig, raw.get("optim", {}), "optim", file)
    for key in ("epochs", "steps_per_epoch", "batch_size", "num_threads"):
        if getattr(optim, key) < 1:
            raise TrainConfigError(f"{file}: optim.{key} = {getattr(optim, key)}: must be >= 1")
    if not optim.lr > 0 or optim.weight_decay < 0 or optim.warmup_steps < 0:
        raise TrainConfigError(f"{file}: optim.lr > 0, optim.weight_decay and warmup_steps >= 0")
    augment = read_section(Augmentation, raw.get("augment", {}), "augment", file)
    augment = replace(augment, flip_axes=tuple(augment.flip_axes))
    if any(a not in (0, 1, 2) for a in augment.flip_axes):
        raise TrainConfigError(f"{file}: augment.flip_axes: spatial axes 0, 1 or 2 only")
    if augment.pos < 0 or augment.neg < 0 or augment.pos + augment.neg <= 0:
        raise TrainConfigError(f"{file}: augment.pos and augment.neg: >= 0, not both 0")
    for key in ("flip_prob", "affine_prob", "intensity_prob"):
        if not 0.0 <= getattr(augment, key) <= 1.0:
            raise TrainConfigError(f"{file}: augment.{key}: a probability in [0, 1]")
    dice_targets = _dice_targets(raw.get("evaluate", {}), data.structures, file)
    card = raw.get("card", {})
    notes = card.get("notes", []) if isinstance(card, dict) else None
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise TrainConfigError(f"{file}: card.notes must be a list of strings")
    return SegmentationTrainConfig(
        name=name,
        task=TASK,
        model=model,
        catalogue=catalogue,
        data=data,
        optim=optim,
        augment=augment,
        source=file,
        card_notes=tuple(notes),
        dice_targets=dice_targets,
    )


def _dice_targets(raw: Any, structures: tuple[str, ...], file: Path) -> dict[str, float]:
    if not isinstance(raw, dict) or set(raw) - {"dice_targets"}:
        raise TrainConfigError(f"{file}: [evaluate] takes dice_targets only")
    targets = raw.get("dice_targets", {})
    if not isinstance(targets, dict):
        raise TrainConfigError(f"{file}: evaluate.dice_targets: a table of structure = minimum")
    out: dict[str, float] = {}
    for name, minimum in targets.items():
        if name not in structures:
            raise TrainConfigError(
                f"{file}: evaluate.dice_targets.{name}: not one of data.structures"
            )
        if isinstance(minimum, bool) or not isinstance(minimum, int | float):
            raise TrainConfigError(f"{file}: evaluate.dice_targets.{name}: a number in [0, 1]")
        if not 0.0 <= minimum <= 1.0:
            raise TrainConfigError(f"{file}: evaluate.dice_targets.{name}: a number in [0, 1]")
        out[name] = float(minimum)
    return out


def _data(raw: Any, base: Path, file: Path) -> SegmentationDataConfig:
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{file}: [data] must be a table")
    splits_raw = raw.get("splits", {})
    plain = read_section(
        SegmentationDataConfig,
        {k: v for k, v in raw.items() if k != "splits"},
        "data",
        file,
    )
    if not isinstance(splits_raw, dict) or not splits_raw:
        raise TrainConfigError(f"{file}: [data.splits] must name at least one split of pairs")
    splits = {name: _pairs(name, pairs, file) for name, pairs in splits_raw.items()}
    data: SegmentationDataConfig = replace(
        plain,
        archive=(base / plain.archive).resolve(),
        structures=tuple(plain.structures),
        splits=splits,
    )
    if not data.structures or len(set(data.structures)) != len(data.structures):
        raise TrainConfigError(f"{file}: data.structures: catalogue names, each once")
    for split in (data.train_split, data.dev_split):
        if split and split not in splits:
            raise TrainConfigError(
                f"{file}: split {split!r} is not in [data.splits] ({', '.join(sorted(splits))})"
            )
    return data


def _pairs(split: str, pairs: Any, file: Path) -> tuple[LabelPair, ...]:
    where = f"{file}: data.splits.{split}"
    if not isinstance(pairs, list) or not pairs:
        raise TrainConfigError(f"{where}: a non-empty list of {{image = ..., labels = ...}}")
    out = []
    for i, pair in enumerate(pairs, start=1):
        if not isinstance(pair, dict) or set(pair) - {"image", "labels", "modality"}:
            raise TrainConfigError(f"{where}, pair {i}: keys image, labels and modality only")
        image, labels, modality = (
            pair.get("image"),
            pair.get("labels"),
            pair.get("modality", "CT"),
        )
        if not all(isinstance(v, str) and v for v in (image, labels, modality)):
            raise TrainConfigError(f"{where}, pair {i}: image and labels (file names) are needed")
        out.append(LabelPair(str(image), str(labels), str(modality)))
    return tuple(out)
