"""Zero-shot finding scores and text-to-image search over embedded images.

As in CLIP and CheXzero: every prompt of a class is embedded, the prompt embeddings are
averaged and re-normalised per class (a prompt ensemble), and an image's class probabilities
are the softmax of the scaled cosine similarities, over a group's classes or over a binary
finding's positive and negative prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from inference.zero_shot.catalogue import FindingCatalogue

TextEmbedder = Callable[[Sequence[str]], torch.Tensor]  # texts -> [N, D] unit-norm


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Class embeddings for every catalogue entry, ready to score image embeddings."""

    catalogue: FindingCatalogue
    group_names: tuple[str, ...]
    group_weights: tuple[torch.Tensor, ...]  # per group: [classes, D]
    binary_weights: torch.Tensor  # [binary findings, 2, D]: (positive, negative)
    scale: float


@dataclass(frozen=True)
class FindingScores:
    """Per image, the probability of each finding (group members sum to one within a group)."""

    names: tuple[str, ...]
    probabilities: torch.Tensor  # [images, findings]

    def column(self, name: str) -> torch.Tensor:
        return self.probabilities[:, self.names.index(name)]


def class_embedding(embed: TextEmbedder, prompts: Sequence[str]) -> torch.Tensor:
    """Mean of the prompts' unit embeddings, normalised again (the prompt ensemble)."""
    return F.normalize(embed(list(prompts)).mean(0), dim=-1)


def build_classifier(
    catalogue: FindingCatalogue, embed: TextEmbedder, scale: float
) -> ZeroShotClassifier:
    groups = catalogue.groups()
    group_weights = tuple(
        torch.stack([class_embedding(embed, f.positive) for f in members])
        for members in groups.values()
    )
    binary = catalogue.binary()
    if binary:
        binary_weights = torch.stack(
            [
                torch.stack(
                    [class_embedding(embed, f.positive), class_embedding(embed, f.negative)]
                )
                for f in binary
            ]
        )
    else:
        dim = group_weights[0].shape[1]
        binary_weights = torch.zeros(0, 2, dim)
    return ZeroShotClassifier(catalogue, tuple(groups), group_weights, binary_weights, scale)


def score(classifier: ZeroShotClassifier, image_emb: torch.Tensor) -> FindingScores:
    """Finding probabilities of ``[N, D]`` unit-norm image embeddings."""
    names: list[str] = []
    columns: list[torch.Tensor] = []
    groups = classifier.catalogue.groups()
    for name, weights in zip(classifier.group_names, classifier.group_weights, strict=True):
        probs = torch.softmax(classifier.scale * image_emb @ weights.t(), dim=1)
        names += [f.name for f in groups[name]]
        columns.append(probs)
    for f, weights in zip(classifier.catalogue.binary(), classifier.binary_weights, strict=True):
        probs = torch.softmax(classifier.scale * image_emb @ weights.t(), dim=1)[:, :1]
        names.append(f.name)
        columns.append(probs)
    return FindingScores(names=tuple(names), probabilities=torch.cat(columns, dim=1))


def search(
    query_emb: torch.Tensor, image_emb: torch.Tensor, top_k: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-to-image search: the ``top_k`` images (indices, cosine similarities) per query."""
    sims = query_emb @ image_emb.t()
    k = min(top_k, image_emb.shape[0])
    values, indices = sims.topk(k, dim=1)
    return indices, values
