"""The impression generator: the findings image encoder conditioning a text decoder.

Two routes, by configuration (:class:`inference.impression.config.DecoderConfig`):

* ``gpt2`` (CvT2DistilGPT2): a GPT-2 decoder with cross-attention in every block; the image
  encoder's last feature grid (one token per cell, with a learned position) and its pooled
  feature, projected to the decoder's width, are the ``encoder_hidden_states``.
* ``qformer`` (MedBLIP, ELIXR-B): a query transformer turns the same image tokens into a
  prefix of a frozen causal language model's input embeddings.

The encoder's raw outputs (:meth:`ImpressionModel.image_features`) are kept apart from the
trained conditioning, so a frozen encoder's features can be computed once per image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inference.impression.config import ImpressionConfig
from inference.impression.qformer import QueryTransformer
from inference.models.config import ModelConfigError
from inference.models.image_encoder import ImageEncoder
from inference.models.text_encoder import file_sha256

LANGUAGE_MODEL_PREFIX = "language_model."


class ImpressionModel(nn.Module):
    """Image encoder, conditioning and decoder of one impression package."""

    def __init__(
        self,
        config: ImpressionConfig,
        vocab_size: int | None = None,
        language_model: nn.Module | None = None,
    ) -> None:
        """``vocab_size``: the tokenizer's (gpt2 route); ``language_model``: the frozen causal
        LM of the qformer route (see :func:`load_language_model`)."""
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image)
        width = config.decoder.hidden_size
        self.grid_tokens = _grid_cells(self.image_encoder) if config.features == "spatial" else 0
        self.grid_projection = nn.Linear(config.image.widths[-1], width)
        self.pooled_projection = nn.Linear(config.image.feature_dim, width)
        self.positions = nn.Parameter(torch.zeros(self.grid_tokens + 1, width))
        self.norm = nn.LayerNorm(width)
        self.decoder: nn.Module | None = None
        self.qformer: QueryTransformer | None = None
        self.language_model: nn.Module | None = None
        d = config.decoder
        if d.kind == "gpt2":
            from transformers import GPT2Config, GPT2LMHeadModel

            self.decoder = GPT2LMHeadModel(
                GPT2Config(
                    vocab_size=vocab_size or d.vocab_size,
                    n_positions=d.max_length,
                    n_embd=width,
                    n_layer=d.num_layers,
                    n_head=d.num_heads,
                    resid_pdrop=d.dropout,
                    embd_pdrop=d.dropout,
                    attn_pdrop=d.dropout,
                    add_cross_attention=True,
                    # The tokenizer's ids are given to generate(); GPT-2's defaults (50256)
                    # lie outside a small vocabulary.
                    bos_token_id=None,
                    eos_token_id=None,
                )
            )
        elif d.kind == "qformer":
            if language_model is None:
                raise ModelConfigError("decoder.kind = 'qformer' needs its language model")
            lm_width = int(language_model.get_input_embeddings().weight.shape[1])  # type: ignore[operator]
            self.qformer = QueryTransformer(
                width, d.num_queries, d.qformer_layers, d.qformer_heads, lm_width, d.dropout
            )
            language_model.requires_grad_(False)
            self.language_model = language_model.eval()

    @property
    def generates(self) -> bool:
        """False for a retrieval-only model (``decoder.kind = 'none'``)."""
        return self.config.decoder.kind != "none"

    def train(self, mode: bool = True) -> ImpressionModel:
        super().train(mode)
        if self.language_model is not None:  # frozen: no dropout, ever
            self.language_model.eval()
        return self

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's last feature grid ``[B, cells, channels]`` and pooled feature
        ``[B, feature_dim]`` (exactly :class:`ImageEncoder`'s output)."""
        encoder = self.image_encoder
        size = tuple(encoder.config.image_size)
        if images.ndim != 4 or images.shape[1] != encoder.config.in_channels:
            raise ValueError(
                f"image batch of shape {tuple(images.shape)}: expected [batch, "
                f"{encoder.config.in_channels}, {'x'.join(map(str, size))}]"
            )
        if tuple(images.shape[2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
        net = encoder.net
        x = net.act(net.bn1(net.conv1(images)))  # type: ignore[operator]
        if not net.no_max_pool:
            x = net.maxpool(x)  # type: ignore[operator]
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = stage(x)  # type: ignore[operator]
        pooled = encoder.dropout(net.fc(net.avgpool(x).flatten(1)))  # type: ignore[operator]
        return x.flatten(2).transpose(1, 2), pooled

    @staticmethod
    def retrieval_embedding(pooled: torch.Tensor) -> torch.Tensor:
        """The unit vector a retrieval bank compares images by: the pooled feature."""
        return F.normalize(pooled.float(), dim=-1)

    def condition(self, grid: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Image tokens ``[B, cells + 1, hidden]`` for the decoder's cross-attention."""
        tokens = self.pooled_projection(pooled)[:, None]
        if self.grid_tokens:
            if grid.shape[1] != self.grid_tokens:
                raise ValueError(
                    f"{grid.shape[1]} feature cells: the model was built for {self.grid_tokens}"
                )
            tokens = torch.cat([self.grid_projection(grid), tokens], dim=1)
        out: torch.Tensor = self.norm(tokens + self.positions)
        return out

    def loss(
        self,
        grid: torch.Tensor,
        pooled: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of the next token (padding left out)."""
        logits = self.next_token_logits(self.condition(grid, pooled), input_ids, attention_mask)
        target = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten())

    def next_token_logits(
        self, tokens: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``[B, L, vocab]`` at every position of ``input_ids``; ``tokens`` None runs
        the gpt2 decoder on text alone (its language-model warm start)."""
        if self.decoder is not None:
            out = self.decoder(
                input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=tokens
            )
            logits: torch.Tensor = out.logits
            return logits
        if self.qformer is None or self.language_model is None or tokens is None:
            raise ModelConfigError("this impression model has no decoder (retrieval only)")
        prefix = self.qformer(tokens)
        embed = self.language_model.get_input_embeddings()  # type: ignore[operator]
        inputs = torch.cat([prefix, embed(input_ids)], dim=1)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        out = self.language_model(inputs_embeds=inputs, attention_mask=mask)
        lm_logits: torch.Tensor = out.logits[:, prefix.shape[1] :]
        return lm_logits

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The weights a package stores: everything but the frozen language model."""
        return {
            k: v for k, v in self.state_dict().items() if not k.startswith(LANGUAGE_MODEL_PREFIX)
        }


def _grid_cells(encoder: ImageEncoder) -> int:
    """How many cells the encoder's last feature grid has at its input size."""
    net = encoder.net
    x = torch.zeros(1, encoder.config.in_channels, *encoder.config.image_size)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        x = net.conv1(x)  # type: ignore[operator]
        if not net.no_max_pool:
            x = net.maxpool(x)  # type: ignore[operator]
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = stage(x)  # type: ignore[operator]
    encoder.train(was_training)
    return int(x.shape[2] * x.shape[3])


def load_language_model(folder: str | Path) -> nn.Module:
    """A causal language model from a local folder (``from_pretrained``, no hub access)."""
    from transformers import AutoModelForCausalLM

    path = Path(folder)
    if not path.is_dir():
        raise ModelConfigError(f"decoder.language_model {str(path)!r} is not a local folder")
    try:
        model: nn.Module = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelConfigError(f"cannot load the language model in {str(path)!r}: {exc}") from exc
    return model.eval()


def language_model_hash(folder: str | Path) -> str:
    """SHA-256 over the weight files of a language-model folder (what a package references)."""
    import hashlib

    path = Path(folder)
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ModelConfigError(f"language model folder {str(path)!r} has no weight files")
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()
