"""The impression training configuration (a TOML file with ``task = "impression"``).

Relative paths are relative to the file's folder. The model tables (``[model]``,
``[model.image]``, ``[model.decoder]``, ``[model.generation]``) come from ``preset`` with the
file's own values over them; with ``[init] findings_package`` the image encoder's
configuration and weights come from that findings package's member ``findings_member``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inference.impression.config import ImpressionConfig
from inference.models.config import ModelConfigError
from inference.toml_file import read_toml
from training.config import TrainConfigError, merge_tables, read_section


@dataclass(frozen=True)
class ImpressionData:
    archive: Path = Path()
    train_split: str = "train"
    dev_split: str = "dev"
    # The target text: these sections of a record joined (MedPix: the image's caption).
    target_sections: tuple[str, ...] = ("caption",)
    # Text-only report collections (CSV) for the decoder's language-model warm start and
    # the tokenizer's vocabulary.
    extra_text: tuple[Path, ...] = ()
    limit: int = 0  # >0: the first N training (and dev) records only (tests, smoke runs)


@dataclass(frozen=True)
class ImpressionOptim:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    seed: int = 0
    num_threads: int = 2
    # The image encoder: frozen (its features computed once per image, no augmentation) or
    # fine-tuned at ``image_lr`` with augmentation.
    train_image_encoder: bool = False
    image_lr: float = 1e-4
    label_smoothing: float = 0.0
    # >0: the decoder first learns the language alone (no image) this many epochs on the
    # training targets + data.extra_text (the warm start).
    lm_epochs: int = 0
    lm_lr: float = 1e-3
    max_steps: int = 0  # >0: stop after this many image-conditioned steps (tests)


@dataclass(frozen=True)
class ImpressionInit:
    # A findings package whose image encoder (member ``findings_member``) initialises ours.
    findings_package: Path | None = None
    findings_member: int = 0


@dataclass(frozen=True)
class ImpressionEvaluate:
    # The finding catalogues the labeller reads the texts with (clinical agreement).
    catalogues: tuple[Path, ...] = ()
    # A findings package read on the same dev images: generated text against its output.
    findings_package: Path | None = None
    examples: int = 10  # generated impressions shown in the card beside the truth


@dataclass(frozen=True)
class ImpressionTrainConfig:
    name: str
    task: str
    model: ImpressionConfig
    data: ImpressionData
    optim: ImpressionOptim
    init: ImpressionInit = field(default_factory=ImpressionInit)
    evaluate: ImpressionEvaluate = field(default_factory=ImpressionEvaluate)
    source: Path = Path()
    card_notes: tuple[str, ...] = ()


def load_impression_config(file: Path, raw: dict[str, Any]) -> ImpressionTrainConfig:
    """An impression configuration from its parsed TOML; :class:`TrainConfigError` names
    what is wrong."""
    base = file.parent
    allowed = {"name", "task", "preset", "model", "data", "optim", "init", "evaluate", "card"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise TrainConfigError(f"{file}: unknown key(s) {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise TrainConfigError(f"{file}: name = {name!r}: letters, digits, - and _ only")
    init = read_section(ImpressionInit, raw.get("init", {}), "init", file)
    if init.findings_package is not None:
        init = replace(init, findings_package=(base / str(init.findings_package)).resolve())
    model_data: dict[str, Any] = {}
    if "preset" in raw:
        model_data = read_toml(
            base / str(raw["preset"]), f"the preset of {file}:", TrainConfigError
        )
    model_data = merge_tables(model_data, raw.get("model", {}))
    if init.findings_package is not None:
        if "image" in raw.get("model", {}):
            raise TrainConfigError(
                f"{file}: [model.image] and init.findings_package both set the image encoder; "
                "keep one (the package's encoder brings its own configuration)"
            )
        model_data["image"] = _findings_image(init.findings_package, init.findings_member, file)
    decoder = model_data.get("decoder", {})
    if isinstance(decoder, dict) and decoder.get("language_model"):
        decoder["language_model"] = str((base / str(decoder["language_model"])).resolve())
    try:
        model = ImpressionConfig.from_dict(model_data)
    except ModelConfigError as exc:
        raise TrainConfigError(f"{file}: {exc}") from exc
    data = read_section(ImpressionData, raw.get("data", {}), "data", file)
    data = replace(
        data,
        archive=(base / data.archive).resolve(),
        extra_text=tuple((base / p).resolve() for p in data.extra_text),
        target_sections=tuple(data.target_sections),
    )
    if not data.target_sections or not all(isinstance(s, str) for s in data.target_sections):
        raise TrainConfigError(f"{file}: data.target_sections needs section names")
    for extra in data.extra_text:
        if not extra.is_file():
            raise TrainConfigError(f"{file}: data.extra_text {extra} does not exist")
    optim = read_section(ImpressionOptim, raw.get("optim", {}), "optim", file)
    for key in ("epochs", "batch_size", "num_threads"):
        if getattr(optim, key) < 1:
            raise TrainConfigError(f"{file}: optim.{key} = {getattr(optim, key)}: must be >= 1")
    if not optim.lr > 0 or not optim.image_lr > 0 or not optim.lm_lr > 0:
        raise TrainConfigError(f"{file}: optim.lr, optim.image_lr and optim.lm_lr must be > 0")
    if optim.lm_epochs < 0 or not 0.0 <= optim.label_smoothing < 1.0:
        raise TrainConfigError(
            f"{file}: optim.lm_epochs must be >= 0 and optim.label_smoothing in [0, 1)"
        )
    if optim.lm_epochs and model.decoder.kind != "gpt2":
        raise TrainConfigError(
            f"{file}: optim.lm_epochs = {optim.lm_epochs}: the warm start is for the gpt2 "
            "decoder (the qformer route's language model is frozen)"
        )
    evaluate = read_section(ImpressionEvaluate, raw.get("evaluate", {}), "evaluate", file)
    evaluate = replace(
        evaluate,
        catalogues=tuple((base / str(p)).resolve() for p in evaluate.catalogues),
        findings_package=(
            (base / str(evaluate.findings_package)).resolve() if evaluate.findings_package else None
        ),
    )
    card = raw.get("card", {})
    notes = card.get("notes", []) if isinstance(card, dict) else None
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise TrainConfigError(f"{file}: card.notes must be a list of strings")
    return ImpressionTrainConfig(
        name=name,
        task="impression",
        model=model,
        data=data,
        optim=optim,
        init=init,
        evaluate=evaluate,
        source=file,
        card_notes=tuple(notes),
    )


def _findings_image(package: Path, member: int, file: Path) -> dict[str, Any]:
    """The image-encoder configuration of a findings package's member, as plain data."""
    import dataclasses

    from inference.models.config import DualEncoderConfig

    try:
        config = DualEncoderConfig.from_file(package / "config.json")
    except ModelConfigError as exc:
        raise TrainConfigError(f"{file}: init.findings_package: {exc}") from exc
    if not 0 <= member < config.members:
        raise TrainConfigError(
            f"{file}: init.findings_member = {member}: the package has {config.members} member(s)"
        )
    image = dataclasses.asdict(config.member(member).image)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in image.items()}
