"""Our fast header parser reads what GDCM reads, or declines and leaves the file to GDCM."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from volume_factory import ct_stack, write

from inference.volume.header_parser import TopLevelParser
from inference.volume.headers import KEYWORDS, _scan

PARSER = TopLevelParser(KEYWORDS)


def _same(parsed: dict[str, str], scanned: dict[str, str]) -> None:
    assert set(parsed) == set(scanned)
    for keyword, value in parsed.items():
        other = scanned[keyword]
        try:  # numbers may be written differently ("1000" and "1000.0")
            assert [float(v) for v in value.split("\\")] == [float(v) for v in other.split("\\")]
        except ValueError:
            assert value == other, keyword


def test_agrees_with_gdcm_on_the_shared_series(shared_data: Path) -> None:
    files = sorted(p for p in (shared_data / "dicom-series").rglob("*") if p.is_file())
    files += sorted((shared_data / "ct-totalsegmentator" / "example_ct_dicom").iterdir())
    files = [f for f in files if not f.name.endswith(".nii.gz")]
    parsed = [PARSER.parse(f) for f in files]
    scanned = _scan(files)
    assert sum(p is not None for p in parsed) >= len(files) - 2  # nearly all take the fast way
    for path, fast, slow in zip(files, parsed, scanned, strict=True):
        if fast is not None:
            assert slow is not None, path
            _same(fast, slow)


def _nested_sequences(ds: Dataset) -> Dataset:
    inner = Dataset()
    inner.CodeValue = "X"
    outer = Dataset()
    outer.ReferencedSOPInstanceUID = "1.2.3"
    outer.PurposeOfReferenceCodeSequence = DicomSequence([inner])
    ds.ReferencedImageSequence = DicomSequence([outer, outer])
    return ds


@pytest.mark.parametrize("implicit", [False, True])
def test_skips_undefined_length_sequences(tmp_path: Path, implicit: bool) -> None:
    datasets, _ = ct_stack(1)
    ds = _nested_sequences(datasets[0])
    ds.ReferencedImageSequence.is_undefined_length = True
    for item in ds.ReferencedImageSequence:
        item.is_undefined_length_sequence_item = True
    path = tmp_path / "sq.dcm"
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    parsed = PARSER.parse(path)
    assert parsed is not None
    assert parsed["Rows"] == "6" and parsed["ImagePositionPatient"].startswith("-10")
    (scanned,) = _scan([path])
    assert scanned is not None
    _same(parsed, scanned)


def test_declines_what_it_does_not_read(tmp_path: Path) -> None:
    datasets, _ = ct_stack(3)
    big, deflated, rle = datasets
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    big.save_as(
        tmp_path / "big.dcm", implicit_vr=False, little_endian=False, enforce_file_format=True
    )
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert PARSER.parse(tmp_path / "big.dcm") is None
    assert PARSER.parse(tmp_path / "deflated.dcm") is None
    (tmp_path / "text.dcm").write_text("not DICOM at all " * 20)
    assert PARSER.parse(tmp_path / "text.dcm") is None
    rle.compress(RLELossless)
    (path,) = write([rle], tmp_path / "rle")
    parsed = PARSER.parse(path)  # encapsulated pixels, explicit little-endian header: read
    assert parsed is not None and parsed["TransferSyntaxUID"] == RLELossless
