"""Comprehensive 3D SR with TID 1500 (Measurement Report) from vlnode's findings.

Per package one TID 1501 measurement group: its algorithm (TID 4019, with the package content
hash), per finding a coded qualitative evaluation and the probability as a numeric measurement
(UCUM ``{probability}``), and the source images read. With a SEG, per structure a TID 1411
volumetric group that references the segment and states its volume in mL. The impression goes
into TID 1500's Qualitative Evaluations container as TEXT, with its algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from inference.dicom_out.uids import name_uid
from inference.results import AlgorithmIdentity, FindingResult, Findings, Impression, LabelMap

MANUFACTURER = "vlnode"
PRIVATE_SCHEME = "99VLNODE"
PROBABILITY = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
MILLILITER = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging")
PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
ABSENT = hd.sr.CodedConcept("272519000", "SCT", "Absent")
# TID 1500 row "Qualitative Evaluations" (EV C0034375, UMLS).
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
ANATOMICAL_STRUCTURE = "123037004"
# Patient and study attributes an SR must carry to file into the source study (PS3.3 C.7.1.1,
# C.7.2.1); type 2, so they are copied even when empty.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class SegmentationReference:
    """The SEG an SR points at, with the label map it encodes."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    label_map: LabelMap
    segment_numbers: dict[int, int]  # structure label -> segment number


def build_measurement_report(
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
    """A Comprehensive 3D SR (TID 1500) with the findings, the impression and the SEG volumes.

    Parameters
    ----------
    sources
        Headers of the source instances (one or several series of one study); the SR copies
        their patient and study attributes and references those each package read.
    findings
        One entry per package and series read.
    impression, segmentation
        Optional: the impression text and the SEG made from the same study.

    Raises
    ------
    ValueError
        When there is nothing to report, the sources span several studies, or a package read
        an instance that is not among ``sources``.
    """
    check_inputs(sources, findings, impression, segmentation)
    by_uid = sources_by_uid(sources)
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = [_findings_group(f, by_uid, sop_instance_uid) for f in findings]
    if segmentation is not None:
        groups.extend(_structure_groups(segmentation, sop_instance_uid))
    algorithms = report_algorithms(findings, impression, segmentation)

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=name_uid("device", *(a.content_hash for a in algorithms)),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=", ".join(f"{a.name} {a.version}" for a in algorithms)[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups or None,
    )
    if impression is not None:
        report[0].ContentSequence.append(_impression_container(impression))

    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence(sources, findings, segmentation),
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.add_new(0x00181020, "LO", software_versions(algorithms))  # Software Versions
    sr.ManufacturerModelName = ", ".join(a.name for a in algorithms)[:64]
    sr.SeriesDescription = "vlnode findings"
    sr.CodingSchemeIdentificationSequence = [private_scheme()]
    return sr


def private_scheme() -> pydicom.Dataset:
    """The Coding Scheme Identification (PS3.3 C.12.1.1.2) of the private 99VLNODE codes."""
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "vlnode finding catalogue"
    item.CodingSchemeResponsibleOrganization = "vlnode"
    return item


def finding_concept(result: FindingResult) -> hd.sr.CodedConcept:
    """SNOMED CT when the catalogue gives a code, else a private 99VLNODE code."""
    # Code Meaning is LO (64 characters); a long private code value goes to Long Code Value.
    if result.snomed:
        return hd.sr.CodedConcept(result.snomed, "SCT", result.display[:64])
    return hd.sr.CodedConcept(result.name, PRIVATE_SCHEME, result.display[:64])


def group_concept(group: str) -> hd.sr.CodedConcept:
    if group == "modality":
        return hd.sr.CodedConcept("121139", "DCM", "Modality")
    return hd.sr.CodedConcept(group, PRIVATE_SCHEME, group.replace("_", " ").capitalize())


def check_inputs(
    sources: Sequence[pydicom.Dataset],
    findings: Sequence[Findings],
    impression: Impression | None,
    segmentation: SegmentationReference | None,
) -> None:
    """Refuse what would make an SR that files wrongly or says nothing."""
    if not sources:
        raise ValueError("an SR needs the headers of its source instances; none given")
    if not findings and impression is None and segmentation is None:
        raise ValueError("nothing to report: no findings, no impression and no segmentation")
    studies = {str(ds.get("StudyInstanceUID", "")) for ds in sources}
    if len(studies) != 1 or "" in studies:
        raise ValueError(
            f"the sources must belong to one study with a Study Instance UID; got {studies}"
        )
    by_uid = sources_by_uid(sources)
    for item in findings:
        missing = [uid for uid in item.read_sop_instance_uids if uid not in by_uid]
        if missing:
            raise ValueError(
                f"{item.algorithm.name} read {len(missing)} instance(s) that are not among "
                f"the sources, e.g. {missing[0]}"
            )


def sources_by_uid(sources: Sequence[pydicom.Dataset]) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in sources if ds.get("SOPInstanceUID")}


def report_algorithms(
    findings: Sequence[Findings],
    impression: Impression | None,
    segmentation: SegmentationReference | None,
) -> list[AlgorithmIdentity]:
    """Every package behind the report, once each, in order of appearance."""
    found = [f.algorithm for f in findings]
    if impression is not None:
        found.append(impression.algorithm)
    if segmentation is not None:
        found.append(segmentation.label_map.algorithm)
    unique: dict[str, AlgorithmIdentity] = {}
    for algorithm in found:
        unique.setdefault(algorithm.content_hash, algorithm)
    return list(unique.values())


def software_versions(algorithms: Sequence[AlgorithmIdentity]) -> list[str]:
    return [f"{a.name} {a.version}"[:64] for a in algorithms]


def describe_algorithm(algorithm: AlgorithmIdentity) -> str:
    return f"{algorithm.name} {algorithm.version} (package sha256:{algorithm.content_hash})"


def evidence(
    sources: Sequence[pydicom.Dataset],
    findings: Sequence[Findings],
    segmentation: SegmentationReference | None,
) -> list[pydicom.Dataset]:
    """Minimal data sets of the instances the SR rests on (read images and the SEG)."""
    by_uid = sources_by_uid(sources)
    wanted = dict.fromkeys(uid for f in findings for uid in f.read_sop_instance_uids)
    if segmentation is not None:
        wanted.update(dict.fromkeys(segmentation.label_map.volume.source_sop_instance_uids))
    chosen = [by_uid[uid] for uid in wanted if uid in by_uid] or list(by_uid.values())
    first = sources[0]
    items: list[pydicom.Dataset] = []
    for ds in chosen:
        items.append(_evidence_item(first, ds.SeriesInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID))
    if segmentation is not None:
        items.append(
            _evidence_item(
                first,
                segmentation.series_instance_uid,
                segmentation.sop_class_uid,
                segmentation.sop_instance_uid,
            )
        )
    return items


def _evidence_item(
    first: pydicom.Dataset, series_uid: str, sop_class_uid: str, sop_instance_uid: str
) -> pydicom.Dataset:
    item = pydicom.Dataset()
    for keyword in PATIENT_STUDY_KEYWORDS:
        setattr(item, keyword, first.get(keyword, ""))
    item.SeriesInstanceUID = series_uid
    item.SOPClassUID = sop_class_uid
    item.SOPInstanceUID = sop_instance_uid
    return item


def _algorithm(algorithm: AlgorithmIdentity, *parameters: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"package content hash sha256:{algorithm.content_hash}", *parameters],
    )


def _findings_group(
    item: Findings, by_uid: dict[str, pydicom.Dataset], sop_instance_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    measurements: list[hd.sr.Measurement] = []
    thresholds: list[str] = []
    for result in item.results:
        concept = finding_concept(result)
        if result.group is None and result.present is not None:
            evaluations.append(
                hd.sr.QualitativeEvaluation(
                    name=concept, value=PRESENT if result.present else ABSENT
                )
            )
            if result.threshold is not None:
                thresholds.append(
                    f"{result.display}: present at probability >= {result.threshold:.2f}"
                )
        elif result.group is not None and result.chosen:
            evaluations.append(
                hd.sr.QualitativeEvaluation(name=group_concept(result.group), value=concept)
            )
        measurements.append(
            hd.sr.Measurement(name=concept, value=float(result.probability), unit=PROBABILITY)
        )
    algorithm = item.algorithm
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=name_uid(
                sop_instance_uid, "findings", algorithm.content_hash, item.series_instance_uid
            ),
            identifier=f"{algorithm.name} findings"[:64],
        ),
        algorithm_id=_algorithm(algorithm, f"method: {item.method}", *thresholds),
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=by_uid[uid].SOPClassUID,
                referenced_sop_instance_uid=uid,
            )
            for uid in item.read_sop_instance_uids
        ]
        or None,
    )


def _structure_groups(
    segmentation: SegmentationReference, sop_instance_uid: str
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    label_map = segmentation.label_map
    volume = label_map.volume
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    by_label = {s.label: s for s in label_map.structures}
    counts = np.bincount(np.asarray(label_map.labels, dtype=np.int64).ravel())
    groups = []
    for label, number in sorted(segmentation.segment_numbers.items(), key=lambda kv: kv[1]):
        structure = by_label[label]
        voxels = int(counts[label]) if label < len(counts) else 0
        type_concept = hd.sr.CodedConcept(structure.type_code, "SCT", structure.type_meaning)
        sites = (
            [hd.sr.FindingSite(anatomic_location=type_concept)]
            if structure.category_code == ANATOMICAL_STRUCTURE
            else None
        )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=name_uid(sop_instance_uid, "structure", f"label {label}"),
                    identifier=f"{structure.display} (label {label})"[:64],
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=segmentation.sop_class_uid,
                    sop_instance_uid=segmentation.sop_instance_uid,
                    segment_number=number,
                    source_series=hd.sr.SourceSeriesForSegmentation(
                        volume.series.series_instance_uid
                    ),
                ),
                finding_type=type_concept,
                finding_category=hd.sr.CodedConcept(
                    structure.category_code, "SCT", structure.category_meaning
                ),
                finding_sites=sites,
                algorithm_id=_algorithm(label_map.algorithm),
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Volume,
                        value=voxels * voxel_ml,
                        unit=MILLILITER,
                        algorithm_id=_algorithm(label_map.algorithm),
                    )
                ],
            )
        )
    return groups


def _impression_container(impression: Impression) -> hd.sr.ContainerContentItem:
    text = hd.sr.TextContentItem(
        name=codes.DCM.Impression,
        value=impression.text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    text.ContentSequence = pydicom.Sequence(list(_algorithm(impression.algorithm)))
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = pydicom.Sequence([text])
    return container
