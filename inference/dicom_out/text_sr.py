"""Basic Text SR (PS3.3 A.35.1): the fallback for viewers that show only text reports.

The same inputs as :func:`inference.dicom_out.sr.build_measurement_report`, written as a tree
of TEXT items a person reads top to bottom: per package its findings ("Pleural effusion:
present (probability 0.71, threshold 0.50)"), the algorithm with its content hash, the images
read (IMAGE items), then the impression and the segmented volumes.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from inference.dicom_out.sr import (
    MANUFACTURER,
    PATIENT_STUDY_KEYWORDS,
    SegmentationReference,
    check_inputs,
    describe_algorithm,
    evidence,
    private_scheme,
    report_algorithms,
    software_versions,
    sources_by_uid,
)
from inference.results import FindingResult, Findings, Impression

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
# (code value, scheme, meaning)
REPORT_TITLE = ("18748-4", "LN", "Diagnostic imaging report")
FINDINGS = ("121070", "DCM", "Findings")
FINDING = ("121071", "DCM", "Finding")
IMPRESSION = ("121073", "DCM", "Impression")
ALGORITHM = ("111001", "DCM", "Algorithm Name")
SOURCE = ("121112", "DCM", "Source of Measurement")
VOLUME = ("118565006", "SCT", "Volume")


def build_text_report(
    sources: Sequence[pydicom.Dataset],
    findings: Sequence[Findings],
    *,
    impression: Impression | None,
    segmentation: SegmentationReference | None,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 990,
    instance_number: int = 1,
) -> pydicom.Dataset:
    """A Basic Text SR stating the findings, the impression and the segmented volumes.

    Raises
    ------
    ValueError
        As :func:`~inference.dicom_out.sr.build_measurement_report`.
    """
    check_inputs(sources, findings, impression, segmentation)
    by_uid = sources_by_uid(sources)
    now = datetime.datetime.now(datetime.UTC)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(BASIC_TEXT_SR)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_instance_uid
    first = sources[0]
    for keyword in PATIENT_STUDY_KEYWORDS:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "vlnode findings (text)"
    ds.ReferencedPerformedProcedureStepSequence = []
    algorithms = report_algorithms(findings, impression, segmentation)
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = ", ".join(a.name for a in algorithms)[:64]
    ds.SoftwareVersions = software_versions(algorithms)
    ds.InstanceNumber = instance_number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PreliminaryFlag = "PRELIMINARY"
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence_sequence(
        evidence(sources, findings, segmentation)
    )

    ds.CodingSchemeIdentificationSequence = pydicom.Sequence([private_scheme()])
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(*REPORT_TITLE)]
    ds.ContinuityOfContent = "SEPARATE"
    content: list[pydicom.Dataset] = []
    for item in findings:
        section = _container(FINDINGS)
        section.ContentSequence = [
            _text(ALGORITHM, describe_algorithm(item.algorithm)),
            _text(FINDING, f"Method: {item.method}"),
            *(_text(FINDING, finding_sentence(r)) for r in item.results),
            *(_image(SOURCE, by_uid[uid].SOPClassUID, uid) for uid in item.read_sop_instance_uids),
        ]
        content.append(section)
    if impression is not None:
        text = _text(IMPRESSION, impression.text)
        text.ContentSequence = [
            _text(ALGORITHM, describe_algorithm(impression.algorithm), "HAS CONCEPT MOD")
        ]
        content.append(text)
    if segmentation is not None:
        content.append(_segmentation_section(segmentation))
    ds.ContentSequence = content
    return ds


def finding_sentence(result: FindingResult) -> str:
    """One finding in words, e.g. ``"Pleural effusion: present (probability 0.71, ...)"``."""
    if result.group is not None:
        group = result.group.replace("_", " ").capitalize()
        chosen = "" if result.chosen else ", not chosen"
        return f"{group}: {result.display} (probability {result.probability:.2f}{chosen})"
    if result.present is None:
        return f"{result.display}: probability {result.probability:.2f}"
    state = "present" if result.present else "absent"
    threshold = "" if result.threshold is None else f", threshold {result.threshold:.2f}"
    return f"{result.display}: {state} (probability {result.probability:.2f}{threshold})"


def _segmentation_section(segmentation: SegmentationReference) -> pydicom.Dataset:
    label_map = segmentation.label_map
    voxel_ml = float(np.prod(label_map.volume.spacing)) / 1000.0
    counts = np.bincount(np.asarray(label_map.labels, dtype=np.int64).ravel())
    by_label = {s.label: s for s in label_map.structures}
    section = _container(("113076", "DCM", "Segmentation"))
    items = [
        _text(ALGORITHM, describe_algorithm(label_map.algorithm)),
        _composite(segmentation.sop_class_uid, segmentation.sop_instance_uid),
    ]
    for label, number in sorted(segmentation.segment_numbers.items(), key=lambda kv: kv[1]):
        voxels = int(counts[label]) if label < len(counts) else 0
        items.append(
            _text(
                VOLUME,
                f"{by_label[label].display} (segment {number}): {voxels * voxel_ml:.1f} mL",
            )
        )
    section.ContentSequence = items
    return section


def _code(value: str, scheme: str, meaning: str) -> pydicom.Dataset:
    code = pydicom.Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def _container(concept: tuple[str, str, str]) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "CONTAINER"
    item.ConceptNameCodeSequence = [_code(*concept)]
    item.ContinuityOfContent = "SEPARATE"
    return item


def _text(
    concept: tuple[str, str, str], value: str, relationship: str = "CONTAINS"
) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RelationshipType = relationship
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(*concept)]
    item.TextValue = value
    return item


def _reference(sop_class_uid: str, sop_instance_uid: str) -> pydicom.Dataset:
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    return ref


def _image(concept: tuple[str, str, str], sop_class_uid: str, uid: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "IMAGE"
    item.ConceptNameCodeSequence = [_code(*concept)]
    item.ReferencedSOPSequence = [_reference(sop_class_uid, uid)]
    return item


def _composite(sop_class_uid: str, uid: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "COMPOSITE"
    item.ConceptNameCodeSequence = [_code("121191", "DCM", "Referenced Segment")]
    item.ReferencedSOPSequence = [_reference(sop_class_uid, uid)]
    return item


def _evidence_sequence(items: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Current Requested Procedure Evidence: study -> series -> instances (PS3.3 C.17.2)."""
    series: dict[str, list[pydicom.Dataset]] = {}
    for item in items:
        series.setdefault(str(item.SeriesInstanceUID), []).append(
            _reference(item.SOPClassUID, item.SOPInstanceUID)
        )
    study = pydicom.Dataset()
    study.StudyInstanceUID = items[0].StudyInstanceUID
    study.ReferencedSeriesSequence = []
    for uid, refs in series.items():
        entry = pydicom.Dataset()
        entry.SeriesInstanceUID = uid
        entry.ReferencedSOPSequence = refs
        study.ReferencedSeriesSequence.append(entry)
    return [study]
