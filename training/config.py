"""The training configuration (a TOML file), read into typed, validated, frozen objects.

Relative paths in the file are taken relative to the file's own folder, so a configuration
committed under ``conf/findings`` finds ``../shared/data`` from any working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from inference.models.config import DualEncoderConfig, ModelConfigError
from inference.models.entities import LexiconError, load_lexicon
from inference.toml_file import read_toml


class TrainConfigError(ValueError):
    """A training configuration value is missing or not allowed (the message names it)."""


@dataclass(frozen=True)
class DataConfig:
    archive: Path = Path()
    train_split: str = "train"
    dev_split: str = "dev"
    # Text views sampled per image and epoch; each is a list of section names joined in order.
    text_views: tuple[tuple[str, ...], ...] = (("caption",),)
    # Extra text-only reports for the tokenizer (and masked-language pretraining).
    extra_text: tuple[Path, ...] = ()
    limit: int = 0  # >0: use only the first N training records (tests, smoke runs)
    # A lexicon of radiology entities (inference/models/entities.py): when set, each training
    # record gets one more text view, the entities named in ``entity_sections``.
    entity_lexicon: Path | None = None
    entity_sections: tuple[str, ...] = ("caption",)
    # With a lexicon: the package embeds every text (prompt, caption, search query) together
    # with its entity view, the mean of the two (inference/packages.py); false: the text alone.
    embed_entity_view: bool = True


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    text_lr: float = 2e-5
    weight_decay: float = 0.05
    warmup_steps: int = 20
    seed: int = 0
    num_threads: int = 2
    augment: bool = True
    num_workers: int = 0
    mixed_precision: bool = True  # float16 autocast with loss scaling, on CUDA only
    # bfloat16 autocast on a CPU that computes it natively (oneDNN with AMX or AVX512-BF16):
    # about twice the images per second of float32 for the tiny 2D encoder on such a CPU.
    # Off by default so that float32 runs reproduce; ignored, with a message, on a CPU
    # without it (emulated bfloat16 would be slower than float32).
    cpu_bfloat16: bool = False
    max_steps: int = 0  # >0: stop after this many steps (tests)
    # Which weights become the package: "last" (the final epoch: no selection on dev at all)
    # or "dev_loss" (the epoch with the lowest dev contrastive loss, a label-free criterion).
    select: str = "last"
    # >0: the package (and the dev figures of the log) use an exponential moving average of
    # the trained weights with this decay per step, not the last step's weights; 0: off.
    ema_decay: float = 0.0
    # >0: before the contrastive training, a text encoder built from configuration is trained
    # this many epochs with masked-language modelling on the training text + data.extra_text.
    mlm_epochs: int = 0
    mlm_lr: float = 5e-4
    mlm_batch_size: int = 64
    # >0: beside the image-text loss, a SimCLR image-image loss (this weight) between two
    # augmented views of each training image, through its own projection head (training
    # only; the package does not keep it), at a fixed temperature; both views are augmented
    # at ``image_image_augment`` times the usual ranges. More signal per image for small
    # archives (SLIP's idea).
    image_image_weight: float = 0.0
    image_image_temperature: float = 0.1
    image_image_augment: float = 2.0
    # >0 (with data.entity_lexicon): the entity view is not one more sampled text view but
    # a second image-text loss of its own, with this weight, in every step: each image
    # against the entity views of the batch (KAD's image-entity alignment beside the
    # image-report one). Images whose text names no entity sit that loss out.
    entity_loss_weight: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    name: str
    task: str
    model: DualEncoderConfig
    catalogue: Path
    data: DataConfig
    optim: OptimConfig
    source: Path = field(default=Path())
    # Label columns for the label-efficiency linear probe run after training ([evaluate]).
    probe_columns: tuple[str, ...] = ()
    # Free-text lines for the model card's "Notes" ([card] notes): e.g. design comparisons.
    card_notes: tuple[str, ...] = ()

    def with_overrides(self, **kwargs: Any) -> TrainConfig:
        return replace(self, **kwargs)


def load_train_config(path: str | Path) -> Any:
    """Read a training configuration of any task (``task``, default ``findings``).

    The task's own loader (:mod:`training.tasks`) reads the rest; every loader raises
    :class:`TrainConfigError` naming what is wrong.
    """
    from training.tasks import UnknownTaskError, config_loader

    file = Path(path).resolve()
    raw = read_toml(file, "training configuration", TrainConfigError)
    task = raw.get("task", "findings")
    if not isinstance(task, str):
        raise TrainConfigError(f"{file}: task = {task!r}: expected a task name")
    try:
        load = config_loader(task)
    except UnknownTaskError as exc:
        raise TrainConfigError(f"{file}: {exc}") from exc
    return load(file, raw)


def load_findings_config(file: Path, raw: dict[str, Any]) -> TrainConfig:
    """A findings (dual encoder) configuration from its parsed TOML ``raw``."""
    base = file.parent
    allowed = {"name", "task", "preset", "model", "catalogue", "data", "optim", "evaluate", "card"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise TrainConfigError(f"{file}: unknown key(s) {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise TrainConfigError(f"{file}: name = {name!r}: letters, digits, - and _ only")
    model_data: dict[str, Any] = {}
    if "preset" in raw:
        preset = base / str(raw["preset"])
        model_data = read_toml(preset, f"the preset of {file}:", TrainConfigError)
    model_data = merge_tables(model_data, raw.get("model", {}))
    try:
        model = DualEncoderConfig.from_dict(model_data)
    except ModelConfigError as exc:
        raise TrainConfigError(f"{file}: {exc}") from exc
    if "catalogue" not in raw:
        raise TrainConfigError(f"{file}: catalogue (a finding catalogue file) is required")
    data = read_section(DataConfig, raw.get("data", {}), "data", file)
    data = replace(
        data,
        archive=(base / data.archive).resolve(),
        extra_text=tuple((base / p).resolve() for p in data.extra_text),
        text_views=tuple(tuple(v) for v in data.text_views),
        entity_lexicon=(base / data.entity_lexicon).resolve() if data.entity_lexicon else None,
        entity_sections=tuple(data.entity_sections),
    )
    if data.entity_lexicon is not None:
        if not data.entity_sections:
            raise TrainConfigError(f"{file}: data.entity_sections needs at least one section name")
        try:
            load_lexicon(data.entity_lexicon)
        except LexiconError as exc:
            raise TrainConfigError(f"{file}: data.entity_lexicon: {exc}") from exc
    if not data.text_views or not all(data.text_views):
        raise TrainConfigError(f"{file}: data.text_views needs at least one non-empty list")
    optim = read_section(OptimConfig, raw.get("optim", {}), "optim", file)
    for key in ("epochs", "batch_size", "num_threads"):
        if getattr(optim, key) < 1:
            raise TrainConfigError(f"{file}: optim.{key} = {getattr(optim, key)}: must be >= 1")
    if optim.batch_size < 2:
        raise TrainConfigError(f"{file}: optim.batch_size must be at least 2 (contrastive)")
    if optim.select not in ("last", "dev_loss"):
        raise TrainConfigError(f"{file}: optim.select = {optim.select!r}: 'last' or 'dev_loss'")
    if not optim.lr > 0:
        raise TrainConfigError(f"{file}: optim.lr = {optim.lr}: must be > 0")
    if optim.mlm_epochs and model.text.source != "scratch":
        raise TrainConfigError(
            f"{file}: optim.mlm_epochs = {optim.mlm_epochs}: masked-language pretraining is for "
            "a text encoder built from configuration (text.source = 'scratch')"
        )
    if optim.mlm_epochs < 0 or optim.mlm_batch_size < 2:
        raise TrainConfigError(f"{file}: optim.mlm_epochs >= 0 and optim.mlm_batch_size >= 2")
    if not 0.0 <= optim.ema_decay < 1.0:
        raise TrainConfigError(f"{file}: optim.ema_decay = {optim.ema_decay}: must be in [0, 1)")
    if optim.image_image_weight < 0 or not optim.image_image_temperature > 0:
        raise TrainConfigError(
            f"{file}: optim.image_image_weight must be >= 0 and optim.image_image_temperature > 0"
        )
    if optim.image_image_weight > 0 and not 0 < optim.image_image_augment <= 3:
        raise TrainConfigError(
            f"{file}: optim.image_image_augment = {optim.image_image_augment}: must be in (0, 3]"
        )
    if optim.entity_loss_weight < 0 or (optim.entity_loss_weight > 0 and not data.entity_lexicon):
        raise TrainConfigError(
            f"{file}: optim.entity_loss_weight = {optim.entity_loss_weight}: must be >= 0, and "
            "> 0 only with data.entity_lexicon (the lexicon that finds the entities)"
        )
    evaluate = raw.get("evaluate", {})
    probe = evaluate.get("probe", []) if isinstance(evaluate, dict) else None
    if not isinstance(probe, list) or not all(isinstance(c, str) for c in probe):
        raise TrainConfigError(f"{file}: evaluate.probe must be a list of label column names")
    if isinstance(evaluate, dict) and set(evaluate) - {"probe"}:
        raise TrainConfigError(f"{file}: unknown key(s) in [evaluate]; allowed: probe")
    card = raw.get("card", {})
    notes = card.get("notes", []) if isinstance(card, dict) else None
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise TrainConfigError(f"{file}: card.notes must be a list of strings")
    return TrainConfig(
        card_notes=tuple(notes),
        probe_columns=tuple(probe),
        name=name,
        task=str(raw.get("task", "findings")),
        model=model,
        catalogue=(base / str(raw["catalogue"])).resolve(),
        data=data,
        optim=optim,
        source=file,
    )


def merge_tables(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``, table by table (a preset under a configuration's own values)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            merge_tables(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def read_section(kind: type[Any], data: Any, prefix: str, file: Path) -> Any:
    """A TOML table ``[prefix]`` into the dataclass ``kind``: unknown keys and wrong types
    are refused with a message naming them; missing keys keep the dataclass defaults."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{file}: [{prefix}] must be a table")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TrainConfigError(
            f"{file}: unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    default = kind()
    values: dict[str, Any] = {}
    for key, value in data.items():
        want = getattr(default, key)
        ok = (
            isinstance(value, list)
            if isinstance(want, tuple)
            else isinstance(value, bool)
            if isinstance(want, bool)
            else isinstance(value, int | float) and not isinstance(value, bool)
            if isinstance(want, float)
            else isinstance(value, int) and not isinstance(value, bool)
            if isinstance(want, int)
            else isinstance(value, str)
        )
        if not ok:
            raise TrainConfigError(
                f"{file}: {prefix}.{key} = {value!r}: expected {type(want).__name__}"
            )
        if isinstance(want, Path):
            value = Path(value)
        elif isinstance(want, float):
            value = float(value)
        elif isinstance(want, tuple) and key == "extra_text":
            value = tuple(Path(v) for v in value)
        values[key] = value
    return kind(**values)
