"""The seal tells a complete file from a torn one."""

from __future__ import annotations

from pathlib import Path

from dicom_node import seal
from dicom_node.incoming import IncomingFile


def test_seal_matches_complete_file_only(tmp_path: Path) -> None:
    incoming = IncomingFile(tmp_path)
    for chunk in (b"a" * 5000, b"b" * 3000, b"c"):
        incoming.write(chunk)
        incoming.flush()
    incoming.close()
    path = Path(incoming.name)
    assert seal.has_seal(path) and seal.is_sealed_and_intact(path)
    with open(path, "r+b") as file:
        file.seek(100)
        file.write(b"X")  # same size, one byte different
    assert not seal.is_sealed_and_intact(path)
    assert not seal.is_sealed_and_intact(tmp_path / "missing.dcm")
