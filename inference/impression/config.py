"""The impression generator's configuration: image encoder, text decoder, generation.

Stored as ``config.json`` in an impression package and read from the ``[model]`` tables of a
training configuration (presets in ``conf/impression/presets``). Wrong values raise
:class:`inference.models.config.ModelConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.models.config import ImageEncoderConfig, ModelConfigError, build_section

DECODER_KINDS = ("gpt2", "qformer", "none")
FEATURES = ("spatial", "pooled")


@dataclass(frozen=True)
class DecoderConfig:
    """The text decoder.

    ``gpt2``: a GPT-2 decoder built from these sizes with cross-attention to the image
    features in every block (CvT2DistilGPT2's recipe), its vocabulary the WordPiece one built
    from the training text. ``qformer``: learned queries read the image features and become a
    prefix of the input embeddings of a frozen causal language model loaded from the local
    folder ``language_model`` (MedBLIP, ELIXR-B), which brings its own tokenizer. ``none``: no
    generator; the package answers with the retrieved training report.
    """

    kind: str = "gpt2"
    num_layers: int = 3
    hidden_size: int = 256
    num_heads: int = 4
    dropout: float = 0.1
    vocab_size: int = 4000  # the WordPiece vocabulary's size (gpt2)
    max_length: int = 64  # target tokens, start and end tokens included
    bos_token: str = "[CLS]"
    eos_token: str = "[SEP]"
    pad_token: str = "[PAD]"
    language_model: str = ""  # qformer: a local folder (from_pretrained), never a hub name
    num_queries: int = 16
    qformer_layers: int = 2
    qformer_heads: int = 4

    def __post_init__(self) -> None:
        if self.kind not in DECODER_KINDS:
            raise ModelConfigError(
                f"decoder.kind = {self.kind!r}: must be one of {', '.join(DECODER_KINDS)}"
            )
        for key in ("num_layers", "hidden_size", "num_heads", "vocab_size", "num_queries"):
            if getattr(self, key) < 1:
                raise ModelConfigError(f"decoder.{key} = {getattr(self, key)}: must be >= 1")
        if self.hidden_size % self.num_heads or self.hidden_size % self.qformer_heads:
            raise ModelConfigError(
                f"decoder.hidden_size = {self.hidden_size} must be a multiple of "
                "decoder.num_heads and decoder.qformer_heads"
            )
        if self.max_length < 4:
            raise ModelConfigError(f"decoder.max_length = {self.max_length}: must be >= 4")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"decoder.dropout = {self.dropout}: must be in [0, 1)")
        if self.kind == "qformer" and not self.language_model:
            raise ModelConfigError(
                "decoder.language_model must name a local folder when decoder.kind = 'qformer'"
            )


@dataclass(frozen=True)
class GenerationConfig:
    """Beam search and its length limits (in tokens, the end token not counted)."""

    beam_size: int = 4
    max_new_tokens: int = 48
    min_new_tokens: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 3

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.max_new_tokens < 1 or self.min_new_tokens < 0:
            raise ModelConfigError(
                "generation.beam_size and generation.max_new_tokens must be >= 1, "
                "generation.min_new_tokens >= 0"
            )
        if self.min_new_tokens > self.max_new_tokens:
            raise ModelConfigError(
                f"generation.min_new_tokens = {self.min_new_tokens} exceeds "
                f"generation.max_new_tokens = {self.max_new_tokens}"
            )
        if self.no_repeat_ngram_size < 0:
            raise ModelConfigError("generation.no_repeat_ngram_size must be >= 0 (0: off)")


@dataclass(frozen=True)
class ImpressionConfig:
    """Image encoder + conditioning + decoder + generation of one impression model.

    ``features``: ``spatial`` conditions the decoder on the encoder's last feature grid (one
    token per cell, with a learned position) and its pooled feature; ``pooled`` on the pooled
    feature alone.
    """

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    features: str = "spatial"

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ModelConfigError(
                f"features = {self.features!r}: must be one of {', '.join(FEATURES)}"
            )
        if self.image.architecture != "resnet" or self.image.spatial_dims != 2:
            raise ModelConfigError(
                "the impression model reads key images with a 2D ResNet encoder "
                "(image.architecture = 'resnet', image.spatial_dims = 2)"
            )
        if (
            self.decoder.kind == "gpt2"
            and self.generation.max_new_tokens >= self.decoder.max_length
        ):
            raise ModelConfigError(
                f"generation.max_new_tokens = {self.generation.max_new_tokens}: must be below "
                f"decoder.max_length = {self.decoder.max_length} (the start token takes one)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImpressionConfig:
        data = dict(data)
        image = build_section(ImageEncoderConfig, data.pop("image", {}), "image")
        decoder = build_section(DecoderConfig, data.pop("decoder", {}), "decoder")
        generation = build_section(GenerationConfig, data.pop("generation", {}), "generation")
        unknown = sorted(set(data) - {"features"})
        if unknown:
            raise ModelConfigError(
                f"unknown impression model key(s) {', '.join(unknown)}; allowed: image, "
                "decoder, generation, features"
            )
        features = data.get("features", "spatial")
        if not isinstance(features, str):
            raise ModelConfigError(f"features = {features!r}: expected a string")
        return cls(image=image, decoder=decoder, generation=generation, features=features)

    @classmethod
    def from_file(cls, path: str | Path) -> ImpressionConfig:
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelConfigError(
                f"cannot read impression configuration {str(file)!r}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ModelConfigError(f"{file}: expected a JSON object")
        return cls.from_dict(data)
