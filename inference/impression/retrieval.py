"""The retrieval baseline and fallback: the report of the nearest training image.

A bank holds the unit image embeddings of the training images (the impression model's pooled
encoder feature, :meth:`ImpressionModel.retrieval_embedding`) with their target texts; a
query image gets the text of the most similar one (ties: the earlier bank entry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

BANK_WEIGHTS = "retrieval.safetensors"
BANK_TEXTS = "retrieval.json"


class RetrievalBankError(ValueError):
    """A retrieval bank is empty, inconsistent or cannot be read."""


@dataclass(frozen=True)
class RetrievalBank:
    embeddings: torch.Tensor  # [N, D], unit rows
    texts: tuple[str, ...]
    keys: tuple[str, ...]  # the training records' keys (image paths or series UIDs)
    case_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.embeddings.shape[0]
        if n == 0 or not len(self.texts) == len(self.keys) == len(self.case_ids) == n:
            raise RetrievalBankError(
                f"retrieval bank of {n} embeddings, {len(self.texts)} texts, {len(self.keys)} "
                f"keys and {len(self.case_ids)} case ids: needs one of each per entry, and one "
                "entry at least"
            )

    def nearest(self, embeddings: torch.Tensor) -> list[int]:
        """The bank index of the most similar entry to each query embedding."""
        sims = F.normalize(embeddings.float(), dim=-1) @ self.embeddings.float().t()
        # argmax returns the first maximum: ties go to the earlier entry.
        return [int(i) for i in sims.argmax(dim=1)]

    def retrieve(self, embeddings: torch.Tensor) -> list[str]:
        return [self.texts[i] for i in self.nearest(embeddings)]

    def save(self, folder: Path) -> tuple[str, str]:
        from safetensors.torch import save

        (folder / BANK_WEIGHTS).write_bytes(
            save({"embeddings": self.embeddings.half().contiguous()})
        )
        rows = [
            {"key": k, "case_id": c, "text": t}
            for k, c, t in zip(self.keys, self.case_ids, self.texts, strict=True)
        ]
        (folder / BANK_TEXTS).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        return BANK_WEIGHTS, BANK_TEXTS

    @classmethod
    def load(cls, folder: Path) -> RetrievalBank:
        from safetensors.torch import load_file

        try:
            emb = load_file(str(folder / BANK_WEIGHTS))["embeddings"].float()
            rows = json.loads((folder / BANK_TEXTS).read_text(encoding="utf-8"))
            return cls(
                embeddings=F.normalize(emb, dim=-1),
                texts=tuple(str(r["text"]) for r in rows),
                keys=tuple(str(r["key"]) for r in rows),
                case_ids=tuple(str(r["case_id"]) for r in rows),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RetrievalBankError(f"cannot read the retrieval bank in {folder}: {exc}") from exc
