"""find_series: files grouped by SeriesInstanceUID, headers only, non-DICOM skipped."""

from __future__ import annotations

from pathlib import Path

from volume_factory import ct_stack, write

from inference.volume import find_series


def test_groups_files_by_series_and_skips_other_files(tmp_path: Path) -> None:
    first, _ = ct_stack(3)
    second, _ = ct_stack(2)
    write(first, tmp_path / "a")
    write(second, tmp_path / "a" / "nested")
    (tmp_path / "a" / "README.txt").write_text("not DICOM")
    found = find_series(tmp_path)
    assert set(found) == {first[0].SeriesInstanceUID, second[0].SeriesInstanceUID}
    assert len(found[first[0].SeriesInstanceUID]) == 3
    assert all(p.parent.name == "nested" for p in found[second[0].SeriesInstanceUID])


def test_empty_folder_has_no_series(tmp_path: Path) -> None:
    assert find_series(tmp_path) == {}
