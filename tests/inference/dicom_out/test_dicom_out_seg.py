"""SEG encoding on the real example CT: geometry, round trip, validity (dciodvfy)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

import numpy as np
import pydicom
import pytest

from inference.dicom_out.seg import build_segmentation, read_segmentation
from inference.dicom_out.uids import output_uid
from inference.results import LabelMap
from tests.ct_example import FRAME_OF_REFERENCE_UID, STUDY_INSTANCE_UID
from tests.inference.dicom_out.conftest import TOTALSEG, ExampleCT
from tests.inference.dicom_out.dicom_checks import dciodvfy, dciodvfy_knows


class _SegUids(TypedDict):
    series_instance_uid: str
    sop_instance_uid: str


def _uids(variant: str) -> _SegUids:
    return {
        "series_instance_uid": output_uid(
            STUDY_INSTANCE_UID, TOTALSEG.content_hash, "segmentation", variant, "series"
        ),
        "sop_instance_uid": output_uid(
            STUDY_INSTANCE_UID, TOTALSEG.content_hash, "segmentation", variant, "instance"
        ),
    }


def _through_bytes(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


KINDS = pytest.mark.parametrize(
    ("labelmap", "compress"),
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["binary", "binary-jpeg2000", "labelmap", "labelmap-jpeg2000"],
)


@KINDS
def test_seg_round_trip_gives_dice_one_per_structure(
    example_ct: ExampleCT, labelmap: bool, compress: bool
) -> None:
    # Headers in reverse order: the encoder must order sources by the volume's slices.
    seg, numbering = build_segmentation(
        list(reversed(example_ct.headers)),
        example_ct.label_map,
        labelmap=labelmap,
        compress=compress,
        **_uids(f"seg-{labelmap}-{compress}"),
    )
    present = sorted(int(v) for v in np.unique(example_ct.reference) if v)
    assert len(present) == 31
    assert sorted(numbering) == present
    assert sorted(numbering.values()) == list(range(1, 32))
    assert seg.FrameOfReferenceUID == example_ct.headers[0].FrameOfReferenceUID
    assert seg.FrameOfReferenceUID != FRAME_OF_REFERENCE_UID  # the source's own was kept
    assert seg.SegmentationType == ("LABELMAP" if labelmap else "BINARY")
    if compress:
        assert seg.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless

    back = _through_bytes(seg)
    labels = read_segmentation(back, example_ct.volume)
    assert labels.shape == example_ct.reference.shape
    for label in present:
        dice = _dice(labels == label, example_ct.reference == label)
        assert dice == 1.0, f"label {label}: Dice {dice}"
    assert np.array_equal(labels, example_ct.reference)


@pytest.mark.peer
@KINDS
def test_seg_passes_dciodvfy(
    example_ct: ExampleCT, tmp_path: Path, labelmap: bool, compress: bool
) -> None:
    seg, _ = build_segmentation(
        example_ct.headers,
        example_ct.label_map,
        labelmap=labelmap,
        compress=compress,
        **_uids(f"seg-{labelmap}-{compress}"),
    )
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    if labelmap and not dciodvfy_knows(path):
        pytest.skip(
            "the installed dciodvfy predates the Label Map Segmentation IOD "
            f"({seg.SOPClassUID}): 'Information Object Not found'"
        )
    dciodvfy(path)


def test_seg_segments_carry_snomed_codes_and_algorithm(example_ct: ExampleCT) -> None:
    seg, numbering = build_segmentation(
        example_ct.headers, example_ct.label_map, **_uids("seg-codes")
    )
    liver = next(s for s in seg.SegmentSequence if s.SegmentNumber == numbering[5])
    assert liver.SegmentLabel == "Liver"
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert liver.SegmentAlgorithmName == "TotalSegmentator"
    assert liver.SegmentAlgorithmType == "AUTOMATIC"
    assert seg.Manufacturer == "vlnode"
    assert seg.DeviceSerialNumber == TOTALSEG.content_hash
    # Every source slice is referenced, by its own UID.
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == set(example_ct.volume.source_sop_instance_uids)


def test_seg_omits_empty_frames(example_ct: ExampleCT) -> None:
    # The pancreas (7) lies on 4 of the 20 slices.
    pancreas = np.where(example_ct.reference == 7, 7, 0).astype(np.uint8)
    label_map = replace(example_ct.label_map, labels=pancreas)
    seg, numbering = build_segmentation(example_ct.headers, label_map, **_uids("seg-pancreas"))
    slices_with_pancreas = int(np.any(pancreas == 7, axis=(1, 2)).sum())
    assert numbering == {7: 1}
    assert 0 < seg.NumberOfFrames == slices_with_pancreas < pancreas.shape[0]
    labels = read_segmentation(_through_bytes(seg), example_ct.volume)
    assert np.array_equal(labels, pancreas)


@pytest.mark.parametrize("labelmap", [False, True], ids=["binary", "labelmap"])
def test_seg_is_read_by_position_when_the_uids_differ(
    example_ct: ExampleCT, labelmap: bool
) -> None:
    seg, _ = build_segmentation(
        example_ct.headers, example_ct.label_map, labelmap=labelmap, **_uids("seg-position")
    )
    # The same slices under other UIDs (e.g. the study re-sent after a UID repair).
    volume = example_ct.volume
    renamed = replace(
        volume,
        source_sop_instance_uids=tuple(f"{uid}.9" for uid in volume.source_sop_instance_uids),
    )
    labels = read_segmentation(_through_bytes(seg), renamed)
    assert np.array_equal(labels, example_ct.reference)
    shifted = replace(renamed, affine=renamed.affine.copy())
    shifted.affine[2, 3] += 1.0  # one millimetre off every slice (they are 2 mm apart)
    with pytest.raises(ValueError, match="lies off the slices"):
        read_segmentation(_through_bytes(seg), shifted)


def test_empty_label_map_is_refused(example_ct: ExampleCT) -> None:
    empty = replace(example_ct.label_map, labels=np.zeros_like(example_ct.reference))
    with pytest.raises(ValueError, match="holds no structure"):
        build_segmentation(example_ct.headers, empty, **_uids("seg-empty"))


def test_label_without_structure_is_refused(example_ct: ExampleCT) -> None:
    no_liver = replace(
        example_ct.label_map,
        structures=tuple(s for s in example_ct.label_map.structures if s.label != 5),
    )
    with pytest.raises(ValueError, match=r"\[5\] have no structure"):
        build_segmentation(example_ct.headers, no_liver, **_uids("seg-unknown"))


def test_missing_source_instance_is_refused(example_ct: ExampleCT) -> None:
    with pytest.raises(ValueError, match="no source instance"):
        build_segmentation(example_ct.headers[1:], example_ct.label_map, **_uids("seg-missing"))


def test_label_map_of_other_shape_is_refused(example_ct: ExampleCT) -> None:
    with pytest.raises(ValueError, match="differs from the volume"):
        LabelMap(
            example_ct.reference[:-1],
            example_ct.volume,
            example_ct.label_map.structures,
            TOTALSEG,
        )
