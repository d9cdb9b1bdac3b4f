"""The language-aligned image encoder: two towers, projection heads, a learnable temperature.

The approach of CLIP/ConVIRT as used by ELIXR, KAD, Merlin and CheXzero: images and report
text are embedded in one space where matching pairs are close; findings are then scored
zero-shot by comparing an image with prompts ("pleural effusion" / "no pleural effusion").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from inference.models.config import DualEncoderConfig
from inference.models.image_encoder import ImageEncoder
from inference.models.text_encoder import TextEncoder

# CLIP clamps the logit scale at 100 so that training cannot make the softmax a hard max.
MAX_LOGIT_SCALE = math.log(100.0)


def projection_head(in_dim: int, out_dim: int, hidden: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class DualEncoder(nn.Module):
    """Embeds images and texts into one unit-norm space of ``embed_dim`` dimensions."""

    def __init__(
        self,
        config: DualEncoderConfig,
        vocab_size: int | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> None:
        """``text_encoder``: an existing (frozen) one to share, as ensemble members do."""
        super().__init__()
        if config.members != 1:
            raise ValueError(
                f"members = {config.members}: build an ensemble with DualEncoderEnsemble"
            )
        self.config = config
        self.image_encoder = ImageEncoder(config.image)
        self.text_encoder = text_encoder or TextEncoder(config.text, vocab_size=vocab_size)
        self.image_projection = projection_head(
            config.image.feature_dim, config.embed_dim, config.projection_hidden
        )
        self.text_projection = projection_head(
            self.text_encoder.hidden_size, config.embed_dim, config.projection_hidden
        )
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / config.init_temperature)),
            requires_grad=config.learn_temperature,
        )

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.project_image(self.image_encoder(images))

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        """Image-encoder features to the shared space (unit norm)."""
        return F.normalize(self.image_projection(features), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text-encoder output before projection (cached when the encoder is frozen)."""
        out: torch.Tensor = self.text_encoder(input_ids, attention_mask)
        return out

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(features), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.project_text(self.text_features(input_ids, attention_mask))

    @property
    def image_encoders(self) -> list[ImageEncoder]:
        """The image towers whose features the linear probe reads (one here)."""
        return [self.image_encoder]

    def scale(self) -> torch.Tensor:
        """The logit scale ``1 / temperature``, clamped at 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
