"""Several dual encoders trained alike from consecutive seeds, used as one model.

The members may differ in input size (``member_image_sizes``, a multi-resolution ensemble):
they all receive the images prepared at ``image.image_size`` and each resamples them to its
own size.

Each member embeds into its own space, and the spaces of different seeds are not aligned, so
the ensemble's embedding is the members' unit embeddings side by side divided by ``sqrt(K)``:
it is still unit norm, and the cosine similarity of two such embeddings is the mean of the
members' similarities. Zero-shot logits use the members' mean logit scale. Scoring and search
code treats the ensemble as any dual encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from inference.models.config import DualEncoderConfig, ModelConfigError
from inference.models.dual_encoder import DualEncoder
from inference.models.image_encoder import ImageEncoder
from inference.models.text_encoder import TextEncoder


class DualEncoderEnsemble(nn.Module):
    """``config.members`` dual encoders of one configuration; similarities averaged.

    A frozen pretrained text encoder is the same in every member and is held once.
    """

    def __init__(
        self,
        config: DualEncoderConfig,
        vocab_size: int | None = None,
        members: Sequence[DualEncoder] | None = None,
    ) -> None:
        super().__init__()
        if config.members < 2:
            raise ModelConfigError(f"members = {config.members}: an ensemble needs at least 2")
        single = config.member(0)
        if members is None:
            first = DualEncoder(single, vocab_size)
            shared = first.text_encoder if _shareable(single) else None
            members = [first] + [
                DualEncoder(config.member(i), vocab_size, text_encoder=shared)
                for i in range(1, config.members)
            ]
        if len(members) != config.members or any(
            m.config != config.member(i) for i, m in enumerate(members)
        ):
            raise ModelConfigError(
                f"an ensemble of {config.members} needs that many members of one configuration "
                "(and of their own input sizes, with member_image_sizes)"
            )
        if _shareable(single):
            for m in members[1:]:
                m.text_encoder = members[0].text_encoder
        self.config = config
        self.members = nn.ModuleList(members)

    def _member_list(self) -> list[DualEncoder]:
        return [m for m in self.members if isinstance(m, DualEncoder)]

    @property
    def text_encoder(self) -> TextEncoder:
        """The first member's text encoder (every member's, when it is frozen and pretrained)."""
        return self._member_list()[0].text_encoder

    @property
    def image_encoders(self) -> list[ImageEncoder]:
        return [m.image_encoder for m in self._member_list()]

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        joined: torch.Tensor = torch.cat(parts, dim=-1) / len(parts) ** 0.5
        return joined

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._join([m.encode_image(images) for m in self._member_list()])

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        members = self._member_list()
        if _shareable(members[0].config):  # the frozen encoder runs once for every member
            features = members[0].text_features(input_ids, attention_mask)
            return self._join([m.project_text(features) for m in members])
        return self._join([m.encode_text(input_ids, attention_mask) for m in members])

    def scale(self) -> torch.Tensor:
        """The members' mean logit scale (their similarities are averaged too)."""
        return torch.stack([m.scale() for m in self._member_list()]).mean()


FindingsNetwork = DualEncoder | DualEncoderEnsemble


def build_dual_encoder(config: DualEncoderConfig, vocab_size: int | None = None) -> FindingsNetwork:
    """A dual encoder, or an ensemble of them when ``config.members`` > 1."""
    if config.members > 1:
        return DualEncoderEnsemble(config, vocab_size)
    return DualEncoder(config, vocab_size)


def _shareable(config: DualEncoderConfig) -> bool:
    return config.text.source == "pretrained" and config.text.frozen
