"""Archive readers: bad input is counted, named and skipped; report text is cleaned."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.models.config import ImageEncoderConfig
from training.archive import ArchiveError, clean_text, read_image_archive, split_sections
from training.datasets import load_images, text_views

from .conftest import shared_data


def test_good_archive_reads_every_row(archive: Path) -> None:
    train = read_image_archive(archive, split="train")
    assert train.summary.records == len(train.records) == 12
    assert not train.summary.skipped
    record = train.records[0]
    assert record.section("caption") and record.section("findings")
    # Labels are kept apart from the text, for evaluation only.
    assert record.label("type") in ("CT", "MR")
    assert "CT" not in record.section("history")


def test_bad_input_is_counted_named_and_skipped(bad_archive: Path) -> None:
    result = read_image_archive(bad_archive, split="train")
    counts = result.summary.counts()
    assert counts == {"missing image": 1, "missing report": 1, "empty report": 1}
    details = " ".join(s.detail for s in result.summary.skipped)
    assert "missing.png" in details and "GONE" in details and "empty.png" in details
    # The corrupt file passes the reader (it exists) and is caught when decoded.
    summary = result.summary
    images = load_images(result.records, ImageEncoderConfig(image_size=(32, 32)), summary)
    assert summary.counts()["unreadable image"] == 1
    assert any("corrupt.png" in s.detail for s in summary.skipped)
    assert len(images.records) == 12 == images.images.shape[0]
    assert any("corrupt.png" in line for line in summary.lines())


def test_unknown_layout_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="known archive tables"):
        read_image_archive(tmp_path)


def test_text_cleaning() -> None:
    assert clean_text("Normal chest x-XXXX. There are no XXXX of an effusion.") == (
        "Normal chest x. There are no of an effusion."
    )
    assert clean_text("None.") == ""
    assert clean_text("  •  Ischemia\n• Hyperemia  ") == "Ischemia Hyperemia"
    sections = split_sections("INDICATION: cough.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal.")
    assert sections == {"history": "cough.", "findings": "Clear lungs.", "impression": "Normal."}


def test_text_views_skip_empty_sections(archive: Path) -> None:
    record = read_image_archive(archive, split="train").records[0]
    views = text_views(record, [["caption"], ["caption", "findings"], ["differential"]])
    assert len(views) == 2 and views[1].startswith(views[0])


def test_shared_medpix_reads_without_skips() -> None:
    folder = shared_data("medpix")
    dev = read_image_archive(folder, split="dev")
    assert dev.summary.records == 197 and not dev.summary.skipped
    assert all(r.section("caption") for r in dev.records)
    # The honesty rule: no label column is among the text sections.
    assert {k for r in dev.records for k, _ in r.sections} <= {
        "caption",
        "title",
        "history",
        "findings",
    }


def test_shared_covid_notes_skips_rows_without_notes() -> None:
    notes = read_image_archive(shared_data("cxr-covid-notes"))
    assert notes.summary.counts().get("empty report", 0) > 0
    assert all(r.section("history") for r in notes.records)
