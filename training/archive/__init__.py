"""Archive readers: image files with a CSV, and DICOM studies with reports."""

from training.archive.image_files import ArchiveError, detect_layout, read_image_archive
from training.archive.records import Archive, ArchiveRecord, ReadSummary, Skipped
from training.archive.report_text import clean_text, sentences, split_sections

__all__ = [
    "Archive",
    "ArchiveError",
    "ArchiveRecord",
    "ReadSummary",
    "Skipped",
    "clean_text",
    "detect_layout",
    "read_image_archive",
    "sentences",
    "split_sections",
]
