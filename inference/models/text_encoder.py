"""The text tower: a BERT-style encoder built from configuration or loaded from a folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from inference.models.config import TextEncoderConfig
from inference.models.tokenizer import resolve_pretrained

PRETRAINED_WEIGHTS = "model.safetensors"


class AttentionPool(nn.Module):
    """A learned query attending over the tokens: lets a frozen encoder's output be pooled
    with weight on the words that matter (``sagittal``, ``CT``) rather than evenly."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.key = nn.Linear(hidden, hidden)
        self.query = nn.Parameter(torch.zeros(hidden))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = torch.tanh(self.key(hidden)) @ self.query
        logits = logits.masked_fill(attention_mask == 0, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=1).unsqueeze(-1)
        pooled: torch.Tensor = (hidden * weights).sum(1)
        return pooled


class TextEncoder(nn.Module):
    """A ``transformers`` BERT model pooled (mean, ``[CLS]`` or attention) to ``[B, hidden]``."""

    def __init__(self, config: TextEncoderConfig, vocab_size: int | None = None) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.config = config
        if config.source == "pretrained":
            # Local files only: nothing is fetched from a hub at run time.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModel

            folder = resolve_pretrained(config.pretrained)
            self.bert = AutoModel.from_pretrained(str(folder), local_files_only=True)
        else:
            bert_config = BertConfig(
                vocab_size=vocab_size or config.vocab_size,
                hidden_size=config.hidden_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size,
                max_position_embeddings=max(config.max_length, 64),
            )
            self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.hidden_size = int(self.bert.config.hidden_size)
        self._apply_freezing()
        # The attention pool trains even when the encoder below it is frozen.
        self.attention_pool = (
            AttentionPool(self.hidden_size) if config.pooling == "attention" else None
        )

    def _apply_freezing(self) -> None:
        n = self.config.trainable_layers
        if n < 0:
            return
        for p in self.bert.parameters():
            p.requires_grad_(False)
        if n > 0:
            for layer in self.bert.encoder.layer[-n:]:
                for p in layer.parameters():
                    p.requires_grad_(True)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states ``[B, L, hidden]`` (before pooling)."""
        out: torch.Tensor = self.bert(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return out

    @property
    def top_layers(self) -> int:
        """How many layers at the top train while every layer below them stays frozen (0 when
        the whole encoder is frozen or the whole encoder trains)."""
        n = self.config.trainable_layers
        return n if 0 < n < len(self.bert.encoder.layer) else 0

    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The hidden states ``[B, L, hidden]`` entering the trained top layers: they depend
        on frozen weights only, so training computes them once per text and caches them."""
        n = self.top_layers
        if n == 0:
            return self.token_states(input_ids, attention_mask)
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        # hidden_states[0] is the embedding output, hidden_states[i] the output of layer i.
        states: torch.Tensor = out.hidden_states[-1 - n]
        return states

    def upper_states(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the trained top layers over :meth:`lower_states` (identity when none train):
        ``upper_states(lower_states(x)) == token_states(x)``."""
        n = self.top_layers
        if n == 0:
            return hidden
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(
            config=self.bert.config, inputs_embeds=hidden, attention_mask=attention_mask
        )
        for layer in self.bert.encoder.layer[-n:]:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.token_states(input_ids, attention_mask), attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.attention_pool is not None:
            out: torch.Tensor = self.attention_pool(hidden, attention_mask)
            return out
        if self.config.pooling == "cls":
            first: torch.Tensor = hidden[:, 0]
            return first
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled


def pretrained_weights_hash(config: TextEncoderConfig) -> str:
    """SHA-256 of a pretrained encoder's weight file, recorded in packages that reference it."""
    folder = resolve_pretrained(config.pretrained)
    return file_sha256(folder / PRETRAINED_WEIGHTS)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
