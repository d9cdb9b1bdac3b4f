"""SR encoding (Comprehensive 3D SR with TID 1500, and Basic Text SR) on the example CT."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from inference.dicom_out.seg import build_segmentation
from inference.dicom_out.sr import SegmentationReference, build_measurement_report
from inference.dicom_out.text_sr import build_text_report
from inference.dicom_out.uids import output_uid
from inference.results import AlgorithmIdentity, FindingResult, Findings, Impression
from tests.ct_example import STUDY_INSTANCE_UID
from tests.inference.dicom_out.conftest import ExampleCT
from tests.inference.dicom_out.dicom_checks import dciodvfy, dsrdump

MEDPIX = AlgorithmIdentity("vlnode-medpix", "1.2.0", "c1" * 32, "findings")
CXR = AlgorithmIdentity("vlnode-cxr", "0.3.1", "d2" * 32, "findings")
WRITER = AlgorithmIdentity("vlnode-impression", "0.1.0", "e3" * 32, "impression")
Builder = Callable[..., pydicom.Dataset]
BUILDERS = pytest.mark.parametrize(
    "build", [build_measurement_report, build_text_report], ids=["tid1500", "basic-text"]
)


def _findings(example_ct: ExampleCT) -> list[Findings]:
    volume = example_ct.volume
    uids = volume.source_sop_instance_uids
    return [
        Findings(
            algorithm=MEDPIX,
            series_instance_uid=volume.series.series_instance_uid,
            results=(
                FindingResult("ct", "CT", 0.93, group="modality", chosen=True),
                FindingResult("mr", "MR", 0.04, group="modality"),
                FindingResult("axial", "Axial", 0.88, group="plane", chosen=True),
                FindingResult("abdomen", "Abdomen", 0.61, group="location", chosen=True),
            ),
            read_sop_instance_uids=tuple(uids[::4]),
            method="mean of 5 axial slices, CT window 40/400",
        ),
        Findings(
            algorithm=CXR,
            series_instance_uid=volume.series.series_instance_uid,
            results=(
                FindingResult(
                    "pleural_effusion",
                    "Pleural effusion",
                    0.71,
                    snomed="60046008",
                    present=True,
                    threshold=0.5,
                ),
                FindingResult("nodule", "Lung nodule", 0.12, present=False, threshold=0.5),
                # A private code longer than Code Value's 16 characters.
                FindingResult(
                    "interstitial_lung_disease_pattern", "Interstitial pattern", 0.33, present=False
                ),
            ),
            read_sop_instance_uids=(uids[10],),
            method="middle slice",
        ),
    ]


def _seg_reference(example_ct: ExampleCT) -> SegmentationReference:
    seg, numbering = build_segmentation(
        example_ct.headers,
        example_ct.label_map,
        series_instance_uid=_uid("seg", "series"),
        sop_instance_uid=_uid("seg", "instance"),
    )
    return SegmentationReference(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        series_instance_uid=seg.SeriesInstanceUID,
        label_map=example_ct.label_map,
        segment_numbers=numbering,
    )


def _uid(variant: str, role: str) -> str:
    return output_uid(STUDY_INSTANCE_UID, MEDPIX.content_hash, "findings", variant, role)


def _build(build: Builder, example_ct: ExampleCT, **overrides: Any) -> pydicom.Dataset:
    arguments: dict[str, Any] = {
        "impression": Impression("No acute abnormality in the upper abdomen.", WRITER),
        "segmentation": _seg_reference(example_ct),
        "series_instance_uid": _uid(build.__name__, "series"),
        "sop_instance_uid": _uid(build.__name__, "instance"),
    }
    arguments.update(overrides)
    findings = arguments.pop("findings", _findings(example_ct))
    sources = arguments.pop("sources", example_ct.headers)
    return build(sources, findings, **arguments)


def _through_bytes(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _items(ds: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _numbers(ds: pydicom.Dataset) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for item in _items(ds):
        if item.ValueType == "NUM":
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            found.setdefault(name, []).append(float(item.MeasuredValueSequence[0].NumericValue))
    return found


@pytest.mark.peer
@BUILDERS
def test_sr_passes_dciodvfy_and_renders_in_dsrdump(
    example_ct: ExampleCT, tmp_path: Path, build: Builder
) -> None:
    sr = _build(build, example_ct)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    dciodvfy(path)
    text = dsrdump(path)
    for name in ("Pleural effusion", "Lung nodule", "CT", "Axial", "Abdomen", "Liver"):
        assert name in text
    for probability in ("0.93", "0.71", "0.12", "0.88"):
        assert probability in text
    assert "No acute abnormality in the upper abdomen." in text
    for algorithm in (MEDPIX, CXR, WRITER):
        assert algorithm.name in text
        assert algorithm.content_hash in text
    assert example_ct.volume.source_sop_instance_uids[10] in text  # a referenced image
    if build is build_text_report:
        assert "Pleural effusion: present (probability 0.71, threshold 0.50)" in text
        assert "Modality: CT (probability 0.93)" in text
        assert "Lung nodule: absent (probability 0.12, threshold 0.50)" in text


@pytest.mark.peer
@BUILDERS
def test_sr_with_empty_patient_attributes_and_no_segmentation_is_valid(
    example_ct: ExampleCT, tmp_path: Path, build: Builder
) -> None:
    sources = []
    for header in example_ct.headers:
        blank = copy.deepcopy(header)
        blank.PatientName = ""
        blank.PatientID = ""
        del blank.PatientSex
        sources.append(blank)
    sr = _build(build, example_ct, sources=sources, segmentation=None, impression=None)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    dciodvfy(path)
    assert "Pleural effusion" in dsrdump(path)
    back = _through_bytes(sr)
    assert back.PatientID == ""
    assert back.StudyInstanceUID == STUDY_INSTANCE_UID


def test_measurement_report_round_trips_through_bytes(example_ct: ExampleCT) -> None:
    sr = _build(build_measurement_report, example_ct)
    back = _through_bytes(sr)
    assert back.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert back.StudyInstanceUID == STUDY_INSTANCE_UID
    assert back.PatientID == example_ct.headers[0].PatientID
    assert back.Manufacturer == "vlnode"
    assert list(back.SoftwareVersions) == [
        "vlnode-medpix 1.2.0",
        "vlnode-cxr 0.3.1",
        "vlnode-impression 0.1.0",
        "TotalSegmentator 2.4.0",
    ]
    # highdicom parses it back as a TID 1500 report with one group per package and structure.
    parsed = hd.sr.Comprehensive3DSR.from_dataset(back)
    report = parsed.content
    assert isinstance(report, hd.sr.MeasurementReport)
    image_groups = report.get_image_measurement_groups()
    assert [g.tracking_identifier for g in image_groups] == [
        "vlnode-medpix findings",
        "vlnode-cxr findings",
    ]
    volume_groups = report.get_volumetric_roi_measurement_groups()
    assert len(volume_groups) == 31
    numbers = _numbers(back)
    assert numbers["Pleural effusion"] == [pytest.approx(0.71)]
    assert numbers["CT"] == [pytest.approx(0.93)]
    # Volumes: voxel count times voxel volume, per structure.
    voxel_ml = float(np.prod(example_ct.volume.spacing)) / 1000.0
    expected = sorted(
        float((example_ct.reference == label).sum()) * voxel_ml
        for label in np.unique(example_ct.reference)
        if label
    )
    assert sorted(numbers["Volume"]) == pytest.approx(expected)
    codes = {
        (item.ConceptNameCodeSequence[0].CodeMeaning, item.ConceptCodeSequence[0].CodeValue)
        for item in _items(back)
        if item.ValueType == "CODE"
    }
    assert ("Pleural effusion", "52101004") in codes  # present (SCT)
    assert ("Lung nodule", "272519000") in codes  # absent (SCT)
    assert ("Modality", "ct") in codes
    assert back.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99VLNODE"
    assert ("Finding Site", "10200004") in codes  # the liver's SNOMED CT code
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in back.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert _seg_reference(example_ct).sop_instance_uid in evidence
    assert set(example_ct.volume.source_sop_instance_uids) <= evidence


@pytest.mark.peer
def test_segmentation_only_report_lists_each_instance_once(
    example_ct: ExampleCT, tmp_path: Path
) -> None:
    sr = _build(build_measurement_report, example_ct, findings=[], impression=None)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    dciodvfy(path)
    refs = [
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert len(refs) == len(set(refs)) == len(example_ct.headers) + 1
    assert "Liver" in dsrdump(path)


def _blank_times(ds: pydicom.Dataset, element: pydicom.DataElement) -> None:
    if element.VR in ("DA", "TM", "DT"):
        element.value = ""


@BUILDERS
def test_sr_is_deterministic(example_ct: ExampleCT, build: Builder) -> None:
    first, second = _build(build, example_ct), _build(build, example_ct)
    for ds in (first, second):
        # Only the creation times may differ.
        ds.walk(_blank_times)
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert [str(i.get("UID", "")) for i in _items(first)] == [
        str(i.get("UID", "")) for i in _items(second)
    ]
    assert first == second


@BUILDERS
def test_sr_refuses_unknown_read_instances(example_ct: ExampleCT, build: Builder) -> None:
    findings = _findings(example_ct)
    findings[0] = replace(findings[0], read_sop_instance_uids=("1.2.3.4.5",))
    with pytest.raises(ValueError, match=r"not among the sources, e\.g\. 1\.2\.3\.4\.5"):
        _build(build, example_ct, findings=findings)


@BUILDERS
def test_sr_refuses_sources_of_two_studies(example_ct: ExampleCT, build: Builder) -> None:
    other = copy.deepcopy(example_ct.headers[0])
    other.StudyInstanceUID = "1.2.3.4"
    other.SOPInstanceUID = "1.2.3.4.1"
    with pytest.raises(ValueError, match="one study"):
        _build(build, example_ct, sources=[*example_ct.headers, other])


@BUILDERS
def test_sr_refuses_an_empty_report(example_ct: ExampleCT, build: Builder) -> None:
    with pytest.raises(ValueError, match="nothing to report"):
        _build(build, example_ct, findings=[], impression=None, segmentation=None)


@pytest.mark.peer
@BUILDERS
def test_sr_on_two_series_of_one_study(
    example_ct: ExampleCT, tmp_path: Path, build: Builder
) -> None:
    second = []
    for header in example_ct.headers:
        other = copy.deepcopy(header)
        other.SeriesInstanceUID = f"{header.SeriesInstanceUID}.2"
        other.SOPInstanceUID = f"{header.SOPInstanceUID}.2"
        second.append(other)
    findings = _findings(example_ct)
    findings[1] = replace(
        findings[1],
        series_instance_uid=second[0].SeriesInstanceUID,
        read_sop_instance_uids=(second[3].SOPInstanceUID,),
    )
    sr = _build(
        build,
        example_ct,
        sources=[*example_ct.headers, *second],
        findings=findings,
        segmentation=None,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    dciodvfy(path)
    assert second[3].SOPInstanceUID in dsrdump(path)
    series = {
        s.SeriesInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
    }
    assert series == {example_ct.headers[0].SeriesInstanceUID, second[0].SeriesInstanceUID}


@pytest.mark.peer
def test_dciodvfy_check_catches_an_invalid_sr(example_ct: ExampleCT, tmp_path: Path) -> None:
    sr = _build(build_text_report, example_ct)
    del sr.CompletionFlag  # type 1 in the SR Document General module
    path = tmp_path / "broken.dcm"
    sr.save_as(path, enforce_file_format=True)
    with pytest.raises(AssertionError, match="dciodvfy errors"):
        dciodvfy(path)
