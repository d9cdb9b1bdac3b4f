"""Deterministic output UIDs and the label catalogue loader."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import UID

from inference.dicom_out.structures import CatalogueError, load_structures
from inference.dicom_out.uids import output_uid
from tests.inference.dicom_out.conftest import CATALOGUE


def test_output_uid_is_deterministic_and_distinct() -> None:
    args = ("1.2.3", "ab" * 32, "findings", "comprehensive3d-sr", "instance")
    uid = output_uid(*args)
    assert uid == output_uid(*args)
    assert uid.startswith("2.25.")
    assert UID(uid).is_valid
    others = {
        output_uid("1.2.4", *args[1:]),
        output_uid(args[0], "cd" * 32, *args[2:]),
        output_uid(*args[:2], "segmentation", *args[3:]),
        output_uid(*args[:3], "basic-text-sr", args[4]),
        output_uid(*args[:4], "series"),
    }
    assert uid not in others
    assert len(others) == 5


def test_output_uid_refuses_empty_input() -> None:
    with pytest.raises(ValueError, match="empty: study_instance_uid"):
        output_uid("", "ab", "findings", "sr", "instance")


def test_catalogue_covers_totalsegmentator_v2_total() -> None:
    structures = load_structures(CATALOGUE)
    assert sorted(structures) == list(range(1, 118))
    assert structures[5].name == "liver"
    assert structures[52].name == "aorta"
    assert structures[117].name == "costal_cartilages"
    assert structures[3].display == "Left kidney"
    assert structures[3].type_code == "64033007"


def test_catalogue_covers_the_example_labels(shared_data: Path) -> None:
    structures = load_structures(CATALOGUE)
    for name in ("example_seg_dicom.nii.gz", "example_seg.nii.gz"):
        image = nib.load(shared_data / "ct-totalsegmentator" / name)
        assert isinstance(image, nib.Nifti1Image)
        data = np.asarray(image.dataobj)
        present = {int(v) for v in np.unique(data) if v}
        assert present, name
        assert present <= set(structures), f"{name}: {sorted(present - set(structures))}"


ENTRY = """
[[structure]]
label = {label}
name = "liver"
display = "Liver"
category_code = "123037004"
category_meaning = "Anatomical Structure"
type_code = "{type_code}"
type_meaning = "Liver"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ENTRY.format(label=0, type_code="10200004"), r"entry 1 \(liver\): label must be"),
        (ENTRY.format(label=5, type_code="L1VER"), "type_code 'L1VER' is not a SNOMED"),
        (ENTRY.format(label=5, type_code="10200004").replace('display = "Liver"', ""), "display"),
        (ENTRY.format(label=5, type_code="10200004") * 2, "repeats label 5"),
        ("[catalogue]\nmodel = 'x'\n", "no \\[\\[structure\\]\\] entries"),
        ("[[structure]\n", "cannot be read"),
    ],
    ids=["label", "code", "missing-field", "duplicate", "empty", "not-toml"],
)
def test_bad_catalogue_is_refused_naming_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=message):
        load_structures(path)
