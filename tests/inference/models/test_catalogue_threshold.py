"""The binary decision threshold of a catalogue entry: read, defaulted, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.zero_shot import CatalogueError, load_catalogue

BINARY = '[[finding]]\nname = "effusion"\npositive = ["effusion"]\nnegative = ["no effusion"]\n'
GROUP = (
    '[[finding]]\nname = "ct"\ngroup = "modality"\npositive = ["ct"]\n{extra}'
    '[[finding]]\nname = "mr"\ngroup = "modality"\npositive = ["mri"]\n'
)


def _load(tmp_path: Path, text: str) -> object:
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    return load_catalogue(tmp_path / "c.toml")


def test_threshold_is_read(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(BINARY + "threshold = 0.37\n", encoding="utf-8")
    assert load_catalogue(tmp_path / "c.toml").find("effusion").threshold == pytest.approx(0.37)


def test_threshold_defaults_to_one_half(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(BINARY + GROUP.format(extra=""), encoding="utf-8")
    catalogue = load_catalogue(tmp_path / "c.toml")
    assert [f.threshold for f in catalogue.findings] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "nan", "true", '"0.4"'])
def test_bad_threshold_names_the_entry(tmp_path: Path, value: str) -> None:
    with pytest.raises(CatalogueError, match=r"finding 1 \('effusion'\): threshold must be"):
        _load(tmp_path, BINARY + f"threshold = {value}\n")


def test_threshold_on_a_group_member_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"finding 1 \('ct'\): threshold is for binary"):
        _load(tmp_path, GROUP.format(extra="threshold = 0.4\n"))
