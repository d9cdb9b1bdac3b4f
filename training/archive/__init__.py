"""Archive readers: image files with a CSV, and DICOM studies with reports."""

from pathlib import Path

from training.archive.dicom_studies import (
    DicomArchiveError,
    is_dicom_archive,
    read_dicom_archive,
    read_sr_text,
)
from training.archive.image_files import ArchiveError, detect_layout, read_image_archive
from training.archive.records import Archive, ArchiveRecord, ReadSummary, Skipped
from training.archive.report_text import clean_text, sentences, split_sections


def read_archive(
    folder: str | Path, split: str | None = None, require_text: bool = True
) -> Archive:
    """Read any supported archive: image files + CSV, or DICOM studies + reports/SR."""
    if is_dicom_archive(Path(folder)):
        return read_dicom_archive(folder, split=split, require_text=require_text)
    return read_image_archive(folder, split=split, require_text=require_text)


__all__ = [
    "Archive",
    "ArchiveError",
    "ArchiveRecord",
    "DicomArchiveError",
    "ReadSummary",
    "Skipped",
    "clean_text",
    "detect_layout",
    "is_dicom_archive",
    "read_archive",
    "read_dicom_archive",
    "read_image_archive",
    "read_sr_text",
    "sentences",
    "split_sections",
]
