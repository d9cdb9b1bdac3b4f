"""A small query transformer (BLIP-2's Q-Former, as MedBLIP and ELIXR-B use it): learned
queries read the image features by cross-attention and become a prefix of a frozen causal
language model's input embeddings."""

from __future__ import annotations

import torch
from torch import nn


class QueryTransformer(nn.Module):
    """``[B, T, width]`` image tokens to ``[B, num_queries, lm_width]`` prefix embeddings.

    Each layer: self-attention among the queries, cross-attention from the queries to the
    image tokens, a feed-forward block (pre-norm). Only this module and its output projection
    train; the language model stays frozen.
    """

    def __init__(
        self, width: int, num_queries: int, layers: int, heads: int, lm_width: int, dropout: float
    ) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        layer = nn.TransformerDecoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=4 * width,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerDecoder(layer, num_layers=layers)
        self.norm = nn.LayerNorm(width)
        self.to_language_model = nn.Linear(width, lm_width)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(image_tokens.shape[0], -1, -1)
        out = self.layers(queries, image_tokens)
        prefix: torch.Tensor = self.to_language_model(self.norm(out))
        return prefix
