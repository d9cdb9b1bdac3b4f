"""Images of an archive split with their target text (the impression the model learns)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from inference.models.config import ImageEncoderConfig
from training.archive import ArchiveRecord, ReadSummary, read_archive
from training.datasets import load_images


@dataclass(frozen=True)
class ImpressionSet:
    """Preprocessed images (float16), their records and their target texts, aligned."""

    images: torch.Tensor
    records: tuple[ArchiveRecord, ...]
    targets: tuple[str, ...]
    summary: ReadSummary

    @property
    def case_ids(self) -> list[str]:
        return [r.case_id for r in self.records]


def read_impression_set(
    archive: Path,
    split: str | None,
    sections: tuple[str, ...],
    image: ImageEncoderConfig,
    limit: int = 0,
) -> ImpressionSet:
    """The records of ``split`` whose target text (``sections`` joined) is not empty, with
    their images read as the node reads them; the rest are counted in the summary."""
    read = read_archive(archive, split=split, require_text=False)
    summary = read.summary
    kept = []
    for record in read.records:
        if record.text(sections):
            kept.append(record)
        else:
            summary.skip(record.key, "empty target", f"{record.key} has no {' + '.join(sections)}")
    if limit:
        kept = kept[:limit]
    images = load_images(kept, image, summary)
    targets = tuple(r.text(sections) for r in images.records)
    return ImpressionSet(images.images, images.records, targets, summary)
