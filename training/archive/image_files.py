"""Archives of image files with a CSV: the layouts of MedPix, cxr-covid-notes and cxr-nih1000.

The layout is recognised from the CSV files in the folder, so a held-back folder in the same
layout reads unchanged:

* ``images.csv`` + ``cases.csv`` (MedPix): caption per image; title, history and findings per
  case; labels ``type``, ``modality``, ``plane``, ``location``, ``location_category``.
* ``metadata.csv`` (COVID-19 image collection): clinical notes per image; labels ``finding``,
  ``view``; no split column (every row is ``train``).
* ``labels.csv`` (NIH ChestX-ray14): no text; the finding columns are labels.

Rows whose image is missing, whose case is missing from the case table, or (when text is
required) whose report is empty are counted in the summary and skipped.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.archive.records import Archive, ArchiveRecord, ReadSummary
from training.archive.report_text import clean_text


class ArchiveError(ValueError):
    """The archive folder cannot be read at all (no known CSV layout, unreadable CSV)."""


@dataclass(frozen=True)
class CsvLayout:
    """Where a layout keeps its image path, case key, split, text and label columns."""

    name: str
    table: str
    image_column: str
    case_column: str
    split_column: str | None
    text_columns: tuple[tuple[str, str], ...]  # (section name, column)
    label_columns: tuple[str, ...]
    case_table: str | None = None
    case_text_columns: tuple[tuple[str, str], ...] = ()
    label_prefix_all: bool = False  # every column after the fixed ones is a label (NIH)
    licence: str = "unknown: state it in the model card by hand"


MEDPIX = CsvLayout(
    name="medpix",
    table="images.csv",
    image_column="image",
    case_column="case_id",
    split_column="split",
    text_columns=(("caption", "caption"),),
    label_columns=("type", "modality", "plane", "location", "location_category", "sex", "age"),
    case_table="cases.csv",
    case_text_columns=(("title", "title"), ("history", "history"), ("findings", "findings")),
    licence="MedPix 2.0 (U.S. National Library of Medicine), research use",
)
COVID_NOTES = CsvLayout(
    name="cxr-covid-notes",
    table="metadata.csv",
    image_column="image",
    case_column="patientid",
    split_column=None,
    text_columns=(("history", "clinical_notes"),),
    label_columns=("finding", "view", "sex", "age", "license"),
    licence="per image in metadata.csv, mostly CC BY-NC-SA 4.0 (COVID-19 image data collection)",
)
NIH = CsvLayout(
    name="cxr-nih",
    table="labels.csv",
    image_column="image",
    case_column="patient_id",
    split_column="split",
    text_columns=(),
    label_columns=("view", "sex", "age", "expert_labels"),
    label_prefix_all=True,
    licence="NIH ChestX-ray14, NIH Clinical Center public release",
)
LAYOUTS = (MEDPIX, COVID_NOTES, NIH)


def detect_layout(folder: Path) -> CsvLayout:
    for layout in LAYOUTS:
        if (folder / layout.table).is_file() and (
            layout.case_table is None or (folder / layout.case_table).is_file()
        ):
            return layout
    known = ", ".join(
        f"{lay.table}" + (f" + {lay.case_table}" if lay.case_table else "") for lay in LAYOUTS
    )
    raise ArchiveError(f"{str(folder)!r} has none of the known archive tables ({known})")


def _rows(path: Path) -> Iterator[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ArchiveError(f"cannot read {str(path)!r}: {exc}") from exc


def read_image_archive(
    folder: str | Path, split: str | None = None, require_text: bool = True
) -> Archive:
    """Read the records of an image-file archive (optionally one split).

    Parameters
    ----------
    folder:
        The archive folder (images plus the layout's CSV tables).
    split:
        Keep only rows of this split (``train``, ``dev``, ``valid``...); ``None`` keeps all.
    require_text:
        Skip rows without report text (contrastive training); evaluation sets it to False.
    """
    root = Path(folder)
    layout = detect_layout(root)
    summary = ReadSummary(source=f"{root} ({layout.name}, split {split or 'all'})")
    cases: dict[str, dict[str, str]] = {}
    if layout.case_table:
        for row in _rows(root / layout.case_table):
            cases[row.get(layout.case_column, "")] = row
    records: list[ArchiveRecord] = []
    seen: set[str] = set()
    header_checked = False
    for n, row in enumerate(_rows(root / layout.table), start=2):
        if not header_checked:
            missing = [c for c in (layout.image_column, layout.case_column) if c not in row]
            if missing:
                raise ArchiveError(f"{root / layout.table}: missing column(s) {', '.join(missing)}")
            header_checked = True
        row_split = row.get(layout.split_column, "") if layout.split_column else "train"
        if split is not None and row_split != split:
            continue
        rel = (row.get(layout.image_column) or "").strip()
        key = rel or f"{layout.table} line {n}"
        if not rel:
            summary.skip(key, "missing image", f"{layout.table} line {n} names no image")
            continue
        if rel in seen:
            summary.skip(key, "duplicate row", f"{rel} appears again on line {n}")
            continue
        seen.add(rel)
        path = root / rel
        if not path.is_file():
            summary.skip(key, "missing image", f"image file {rel} does not exist")
            continue
        case_id = (row.get(layout.case_column) or "").strip() or rel
        sections = [(name, clean_text(row.get(col))) for name, col in layout.text_columns]
        if layout.case_table:
            case = cases.get(case_id)
            if case is None:
                summary.skip(key, "missing report", f"case {case_id} is not in {layout.case_table}")
                continue
            sections += [
                (name, clean_text(case.get(col))) for name, col in layout.case_text_columns
            ]
        record = ArchiveRecord(
            key=rel,
            case_id=case_id,
            split=row_split,
            sources=(path,),
            sections=tuple((k, v) for k, v in sections if v),
            labels=_labels(row, layout),
        )
        if require_text and not record.has_text:
            summary.skip(key, "empty report", f"{rel} has no report text")
            continue
        records.append(record)
    summary.records = len(records)
    return Archive(records=tuple(records), summary=summary)


def _labels(row: dict[str, str], layout: CsvLayout) -> tuple[tuple[str, str], ...]:
    names = list(layout.label_columns)
    if layout.label_prefix_all:
        fixed = {layout.image_column, layout.case_column, layout.split_column or ""}
        names = [c for c in row if c not in fixed]
    return tuple((c, (row.get(c) or "").strip()) for c in names if c in row)
