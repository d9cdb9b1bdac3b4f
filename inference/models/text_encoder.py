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


class TextEncoder(nn.Module):
    """A ``transformers`` BERT model with mean (or ``[CLS]``) pooling to ``[B, hidden]``."""

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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
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
