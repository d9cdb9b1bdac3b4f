"""DICOM Segmentation (PS3.3 A.51) from a :class:`~inference.results.LabelMap`, and back.

One segment per structure present in the label map, coded with SNOMED CT (segmented property
category and type, PS3.3 C.8.20.2), made by highdicom on the source images in the label map's
slice order, so every frame points back at the slice it was computed on and shares the source's
frame of reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from copy import deepcopy

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import JPEG2000Lossless

from inference.dicom_out.sr import PATIENT_STUDY_KEYWORDS
from inference.dicom_out.uids import name_uid
from inference.results import AlgorithmIdentity, LabelMap, Structure
from inference.volume.types import Volume3D

MANUFACTURER = "vlnode"
# The structure's label value travels in each segment's Tracking ID, e.g. "liver (label 5)",
# so that a reader can map segment numbers back to the catalogue's labels.
_TRACKING_LABEL = re.compile(r"\(label (\d+)\)$")


def algorithm_identification(algorithm: AlgorithmIdentity) -> hd.AlgorithmIdentificationSequence:
    """The Segment Algorithm Identification of a package (PS3.3 C.8.20.2, Table 10-19)."""
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        source=MANUFACTURER,
        parameters={"content_hash": algorithm.content_hash},
    )


def build_segmentation(
    sources: Sequence[pydicom.Dataset],
    label_map: LabelMap,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    labelmap: bool = False,
    compress: bool = False,
    omit_empty_frames: bool = True,
    series_number: int = 991,
) -> tuple[pydicom.Dataset, dict[int, int]]:
    """Encode ``label_map`` as a highdicom Segmentation on its source images.

    Parameters
    ----------
    sources
        The source series' instances (pixel data not needed), in any order; every slice of
        ``label_map.volume`` must be among them.
    label_map
        Labels on the volume's grid; each value present must be one of ``structures``.
    series_instance_uid, sop_instance_uid
        The SEG's UIDs (see :func:`inference.dicom_out.uids.output_uid`).
    labelmap
        ``True``: a LABELMAP segmentation (DICOM 2024c); default BINARY, which every viewer
        reads.
    compress
        ``True``: JPEG 2000 lossless; default explicit VR little endian.
    omit_empty_frames
        Leave out frames where a segment has no pixel (the usual choice: smaller objects).

    Returns
    -------
    The SEG data set and the segment numbering (structure label -> segment number).

    Raises
    ------
    ValueError
        When the label map is empty, holds a label without a structure, comes from an
        enhanced multi-frame source, or a slice's source instance is not in ``sources``.
    """
    volume = label_map.volume
    if volume.source_frame_numbers is not None:
        raise ValueError(
            f"series {volume.series.series_instance_uid}: SEG on enhanced multi-frame "
            "sources is not supported"
        )
    present = [int(v) for v in np.unique(label_map.labels) if v != 0]
    if not present:
        raise ValueError(
            f"series {volume.series.series_instance_uid}: the label map holds no structure "
            "(every voxel is 0); there is nothing to encode"
        )
    by_label = {s.label: s for s in label_map.structures}
    unknown = [v for v in present if v not in by_label]
    if unknown:
        raise ValueError(
            f"label map values {unknown} have no structure in the catalogue "
            f"({len(by_label)} structures given)"
        )
    numbering = {label: number for number, label in enumerate(present, start=1)}
    ordered = _sources_in_slice_order(sources, volume)

    lookup = np.zeros(max(present) + 1, dtype=np.uint16)
    for label, number in numbering.items():
        lookup[label] = number
    pixel_array = lookup[np.asarray(label_map.labels, dtype=np.int64)]
    dtype = np.uint8 if len(present) < 256 else np.uint16
    pixel_array = pixel_array.astype(dtype)

    identification = algorithm_identification(label_map.algorithm)
    descriptions = [
        _segment_description(by_label[label], number, identification, sop_instance_uid)
        for label, number in numbering.items()
    ]
    algorithm = label_map.algorithm
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=pixel_array,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.LABELMAP
            if labelmap
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64],
        # The package content hash (SHA-256, 64 hex digits) identifies the exact model.
        device_serial_number=algorithm.content_hash[:64],
        content_description=f"{algorithm.name} {algorithm.version}"[:64],
        content_label="VLNODE_SEG",
        content_creator_name=None,
        transfer_syntax_uid=JPEG2000Lossless if compress else pydicom.uid.ExplicitVRLittleEndian,
        omit_empty_frames=omit_empty_frames,
    )
    return seg, numbering


def read_segmentation(seg: pydicom.Dataset, volume: Volume3D) -> npt.NDArray[np.int32]:
    """The structure labels of a vlnode SEG on ``volume``'s grid (0 where none).

    Frames are placed by the source SOP Instance UID each one references or, when the SEG
    does not reference the volume's instances, by their position on the volume's slices;
    slices of the volume without a frame read 0 (omitted empty frames).

    Raises
    ------
    ValueError
        When a segment's Tracking ID carries no structure label, or the SEG's frames do not
        lie on the volume's slices.
    """
    segmentation = hd.seg.Segmentation.from_dataset(seg, copy=False)
    to_label: dict[int, int] = {}
    for number in segmentation.get_segment_numbers():
        description = segmentation.get_segment_description(number)
        match = _TRACKING_LABEL.search(description.tracking_id or "")
        if match is None:
            raise ValueError(
                f"SEG {seg.SOPInstanceUID}: segment {number} ({description.segment_label}) "
                "has no structure label in its Tracking ID"
            )
        to_label[number] = int(match.group(1))
    referenced = {uids[2] for uids in segmentation.get_source_image_uids()}
    if set(volume.source_sop_instance_uids) <= referenced:
        try:
            numbers = segmentation.get_pixels_by_source_instance(
                source_sop_instance_uids=list(volume.source_sop_instance_uids),
                combine_segments=True,
                relabel=False,
                assert_missing_frames_are_empty=True,
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"SEG {seg.SOPInstanceUID} does not fit the slices of series "
                f"{volume.series.series_instance_uid}: {exc}"
            ) from exc
    else:
        numbers = _numbers_by_position(seg, volume)
    lookup = np.zeros(max(to_label) + 1, dtype=np.int32)
    for number, label in to_label.items():
        lookup[number] = label
    labels: npt.NDArray[np.int32] = lookup[np.asarray(numbers, dtype=np.int64)]
    return labels


def _numbers_by_position(seg: pydicom.Dataset, volume: Volume3D) -> npt.NDArray[np.int64]:
    """Segment numbers on the volume's grid, each frame placed by its Image Position (Patient).

    For a SEG whose frames reference other instances (e.g. the same images re-sent under new
    UIDs): a frame must lie on one of the volume's slices, on its rows and columns.
    """
    shape = volume.array.shape[:3]
    if (int(seg.Rows), int(seg.Columns)) != shape[1:]:
        raise ValueError(
            f"SEG {seg.SOPInstanceUID}: frames of {seg.Rows}x{seg.Columns} do not fit the "
            f"volume's {shape[1]}x{shape[2]} slices"
        )
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.array(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    )
    steps = volume.affine[:3, :3]
    expected = np.concatenate(
        [steps[:, 2] / np.linalg.norm(steps[:, 2]), steps[:, 1] / np.linalg.norm(steps[:, 1])]
    )
    if not np.allclose(orientation, expected, atol=1e-3):
        raise ValueError(
            f"SEG {seg.SOPInstanceUID}: plane orientation {orientation.tolist()} differs from "
            f"series {volume.series.series_instance_uid}"
        )
    to_index = np.linalg.inv(volume.affine)
    pixels = seg.pixel_array.reshape(-1, shape[1], shape[2])
    labelmap = seg.get("SegmentationType") == "LABELMAP"
    numbers = np.zeros(shape, dtype=np.int64)
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence, strict=True):
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        index = to_index @ np.array([*position, 1.0])
        slice_index = int(np.rint(index[0]))
        if not np.allclose(index[:3], [slice_index, 0.0, 0.0], atol=0.01) or not (
            0 <= slice_index < shape[0]
        ):
            raise ValueError(
                f"SEG {seg.SOPInstanceUID}: a frame at {position} lies off the slices of "
                f"series {volume.series.series_instance_uid}"
            )
        if labelmap:
            numbers[slice_index] = np.where(frame > 0, frame, numbers[slice_index])
        else:
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            numbers[slice_index][frame > 0] = number
    return numbers


def _segment_description(
    structure: Structure,
    number: int,
    identification: hd.AlgorithmIdentificationSequence,
    sop_instance_uid: str,
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=structure.display[:64],
        segmented_property_category=hd.sr.CodedConcept(
            structure.category_code, "SCT", structure.category_meaning
        ),
        segmented_property_type=hd.sr.CodedConcept(
            structure.type_code, "SCT", structure.type_meaning
        ),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        # Deterministic, so that a re-sent SEG tracks the same structure under the same UID.
        tracking_uid=name_uid(sop_instance_uid, "segment", f"label {structure.label}"),
        tracking_id=f"{structure.name} (label {structure.label})"[-64:],
    )


def _sources_in_slice_order(
    sources: Sequence[pydicom.Dataset], volume: Volume3D
) -> list[pydicom.Dataset]:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources if "SOPInstanceUID" in ds}
    missing = [uid for uid in volume.source_sop_instance_uids if uid not in by_uid]
    if missing:
        raise ValueError(
            f"series {volume.series.series_instance_uid}: {len(missing)} slice(s) of the label "
            f"map have no source instance among the {len(sources)} given, e.g. {missing[0]}"
        )
    return [_with_type2_attributes(by_uid[uid]) for uid in volume.source_sop_instance_uids]


def _with_type2_attributes(source: pydicom.Dataset) -> pydicom.Dataset:
    """The source, or a copy with its missing type 2 patient and study attributes empty.

    highdicom copies them from the first source and stops on one that is absent; modalities
    often leave out the empty ones (no birth date, no referring physician), which PS3.3
    allows a receiver to read as empty.
    """
    missing = [k for k in PATIENT_STUDY_KEYWORDS if k not in source]
    if not missing:
        return source
    copy = deepcopy(source)
    for keyword in missing:
        setattr(copy, keyword, "")
    return copy
