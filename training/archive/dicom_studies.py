"""Archives of DICOM studies with their reports: a reports table and/or SR documents.

Layout: a folder holding DICOM files (any depth) and ``reports.csv`` or ``reports.jsonl``
keyed by ``AccessionNumber`` or ``StudyInstanceUID``, with free-text columns (``findings``,
``impression``, ``history`` or ``indication``, ``caption``), an optional ``split`` column, and
any other columns as labels (for evaluation only). Reports that arrive inside the archive as
DICOM SR (Basic/Enhanced/Comprehensive Text SR) are read too: their TEXT content items are
filed under their concept name (``Findings``, ``Impression``...).

Every image series of a study becomes one record (its files are rebuilt by
:func:`inference.volume.rebuild_series` when the images are loaded, as the node does). A study
without any report, an empty report, or an unreadable SR is counted and skipped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from training.archive.records import Archive, ArchiveRecord, ReadSummary
from training.archive.report_text import clean_text, split_sections

REPORT_FILES = ("reports.csv", "reports.jsonl")
KEY_COLUMNS = {
    "accessionnumber": "AccessionNumber",
    "accession_number": "AccessionNumber",
    "studyinstanceuid": "StudyInstanceUID",
    "study_instance_uid": "StudyInstanceUID",
}
TEXT_COLUMNS = {
    "findings": "findings",
    "impression": "impression",
    "history": "history",
    "indication": "history",
    "caption": "caption",
    "report": "report",
    "text": "report",
}
_SECTION_NAMES = {
    "finding": "findings",
    "findings": "findings",
    "impression": "impression",
    "conclusion": "impression",
    "history": "history",
    "indication": "history",
    "clinical information": "history",
}


class DicomArchiveError(ValueError):
    """The reports table cannot be read or has no key column."""


def is_dicom_archive(folder: Path) -> bool:
    return any((folder / name).is_file() for name in REPORT_FILES)


def _report_rows(folder: Path) -> list[dict[str, Any]]:
    for name in REPORT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".csv"):
                with path.open(newline="", encoding="utf-8") as fh:
                    return list(csv.DictReader(fh))
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise DicomArchiveError(f"{path} line {n}: not a JSON object")
                    rows.append(row)
            return rows
        except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
            raise DicomArchiveError(f"cannot read {path}: {exc}") from exc
    return []


def _row_sections(row: dict[str, Any]) -> list[tuple[str, str]]:
    sections: list[tuple[str, str]] = []
    for column, value in row.items():
        name = TEXT_COLUMNS.get(str(column).lower())
        if name is None or not isinstance(value, str):
            continue
        if name == "report":
            sections += list(split_sections(value).items())
        elif clean_text(value):
            sections.append((name, clean_text(value)))
    return sections


def read_sr_text(path: Path) -> list[tuple[str, str]]:
    """The TEXT content items of an SR document, filed under their concept names."""
    import pydicom

    ds = pydicom.dcmread(path)
    out: list[tuple[str, str]] = []

    def walk(items: Any) -> None:
        for item in items or []:
            if getattr(item, "ValueType", "") == "TEXT":
                concept = (
                    item.ConceptNameCodeSequence[0].CodeMeaning
                    if getattr(item, "ConceptNameCodeSequence", None)
                    else "text"
                )
                name = _SECTION_NAMES.get(str(concept).lower(), "findings")
                text = clean_text(str(getattr(item, "TextValue", "")))
                if text:
                    out.append((name, text))
            walk(getattr(item, "ContentSequence", None))

    walk(getattr(ds, "ContentSequence", None))
    return out


def read_dicom_archive(
    folder: str | Path, split: str | None = None, require_text: bool = True
) -> Archive:
    """Read the image series of a DICOM archive with their studies' reports."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from inference.volume import find_series

    root = Path(folder)
    summary = ReadSummary(source=f"{root} (DICOM studies, split {split or 'all'})")
    rows = _report_rows(root)
    key_of: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(rows, start=2):
        key = next(
            (str(row[c]).strip() for c in row if str(c).lower() in KEY_COLUMNS and row[c]), ""
        )
        if not key:
            summary.skip(
                f"report {n}",
                "missing key",
                f"report row {n} has no AccessionNumber or StudyInstanceUID",
            )
            continue
        key_of[key] = row
    series_by_study: dict[str, list[tuple[str, list[Path], str]]] = {}
    sr_sections: dict[str, list[tuple[str, str]]] = {}
    accession: dict[str, str] = {}
    for series_uid, files in sorted(find_series(root).items()):
        try:
            head = pydicom.dcmread(files[0], stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            summary.skip(series_uid or str(files[0]), "unreadable image", f"{files[0]}: {exc}")
            continue
        study = str(getattr(head, "StudyInstanceUID", ""))
        accession[study] = str(getattr(head, "AccessionNumber", "") or "")
        if getattr(head, "Modality", "") == "SR":
            for path in files:
                try:
                    sr_sections.setdefault(study, []).extend(read_sr_text(path))
                except (InvalidDicomError, OSError, ValueError, AttributeError) as exc:
                    summary.skip(str(path), "unreadable report", f"SR {path.name}: {exc}")
            continue
        series_by_study.setdefault(study, []).append((series_uid, files, str(head.Modality)))
    records: list[ArchiveRecord] = []
    for study, series in sorted(series_by_study.items()):
        row = key_of.get(study) or key_of.get(accession.get(study, "")) or {}
        row_split = str(row.get("split", "") or "train")
        if split is not None and row_split != split:
            continue
        sections = _row_sections(row) + sr_sections.get(study, [])
        if not row and study not in sr_sections:
            summary.skip(study, "missing report", f"study {study} has no report (table or SR)")
            continue
        if require_text and not sections:
            summary.skip(study, "empty report", f"study {study}: its report has no text")
            continue
        labels = tuple(
            (str(k), str(v))
            for k, v in row.items()
            if str(k).lower() not in TEXT_COLUMNS
            and str(k).lower() not in KEY_COLUMNS
            and k != "split"
        )
        for series_uid, files, modality in series:
            records.append(
                ArchiveRecord(
                    key=series_uid,
                    case_id=study,
                    split=row_split,
                    sources=tuple(files),
                    sections=tuple(sections),
                    labels=(*labels, ("series_modality", modality)),
                )
            )
    summary.records = len(records)
    return Archive(records=tuple(records), summary=summary)
