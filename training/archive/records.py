"""What an archive reader hands on: one record per image (or volume) with its report text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ArchiveRecord:
    """One image or series with its cleaned report sections and its evaluation labels.

    ``sections`` hold free text only (caption, history, findings, impression, title...), in a
    fixed order. ``labels`` hold the archive's structured label columns: they are used only to
    judge a model (zero-shot scores, linear probes), never as training text or targets.
    """

    key: str  # unique within the archive: the image's relative path or the series UID
    case_id: str  # images of one case/study share it (bootstrap resampling unit)
    split: str
    sources: tuple[Path, ...]  # the image file, or the DICOM files of one series
    sections: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def section(self, name: str) -> str:
        return next((text for key, text in self.sections if key == name), "")

    def label(self, name: str) -> str:
        return next((value for key, value in self.labels if key == name), "")

    def text(self, names: tuple[str, ...]) -> str:
        """The named sections joined in the order asked for, empty ones left out."""
        return " ".join(t for t in (self.section(n) for n in names) if t)

    @property
    def has_text(self) -> bool:
        return any(text for _, text in self.sections)


@dataclass(frozen=True)
class Skipped:
    """Something an archive reader left out, and why (the message names the thing)."""

    key: str
    reason: str  # a short category: "missing report", "unreadable image", "empty report"...
    detail: str


@dataclass
class ReadSummary:
    """Counts of what was read and what was skipped, by reason, with the items named."""

    source: str
    records: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, key: str, reason: str, detail: str) -> None:
        self.skipped.append(Skipped(key, reason, detail))

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def merge(self, other: ReadSummary) -> None:
        self.skipped.extend(other.skipped)

    def lines(self, limit: int = 20) -> list[str]:
        """A human summary: totals, then the first ``limit`` skipped items."""
        out = [f"{self.source}: {self.records} record(s) read, {len(self.skipped)} skipped"]
        for reason, n in sorted(self.counts().items()):
            out.append(f"  {reason}: {n}")
        for s in self.skipped[:limit]:
            out.append(f"  - {s.key}: {s.detail}")
        if len(self.skipped) > limit:
            out.append(f"  ... and {len(self.skipped) - limit} more")
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "records": self.records,
            "skipped": self.counts(),
            "items": [{"key": s.key, "reason": s.reason, "detail": s.detail} for s in self.skipped],
        }


@dataclass(frozen=True)
class Archive:
    """The records of one archive (one split or all) and the summary of reading it."""

    records: tuple[ArchiveRecord, ...]
    summary: ReadSummary
