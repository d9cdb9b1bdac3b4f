"""A repaired copy of TotalSegmentator's example CT (shared data) for tests.

The shared example_ct_dicom instances carry empty SOP Class/Instance, Study and Series UIDs and
empty patient attributes, which Orthanc and highdicom refuse. The copy written here takes each
instance's UIDs from its file meta, gives the series fixed (deterministic) study and series
UIDs and a test patient, and keeps the pixel data exactly as stored (JPEG 2000).
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from inference.dicom_out.uids import name_uid

EXAMPLE_CT = Path("ct-totalsegmentator") / "example_ct_dicom"
REFERENCE_LABELS = Path("ct-totalsegmentator") / "example_seg_dicom.nii.gz"

STUDY_INSTANCE_UID = name_uid("vlnode-test-ct-example-study")
SERIES_INSTANCE_UID = name_uid("vlnode-test-ct-example-series")
FRAME_OF_REFERENCE_UID = name_uid("vlnode-test-ct-example-frame-of-reference")
PATIENT_ID = "VLNODE-TEST-CT"
PATIENT_NAME = "Test^ExampleCT"


def repaired_example_ct(folder: Path, shared_data: Path | None = None) -> list[Path]:
    """Write the repaired example CT into ``folder``; return the files in name order."""
    if shared_data is None:
        from tests.conftest import SHARED_DATA

        shared_data = SHARED_DATA
    source = shared_data / EXAMPLE_CT
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        meta = ds.file_meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = STUDY_INSTANCE_UID
        ds.SeriesInstanceUID = SERIES_INSTANCE_UID
        if not ds.get("FrameOfReferenceUID"):
            ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
        ds.PatientID = PATIENT_ID
        ds.PatientName = PATIENT_NAME
        if not ds.get("SeriesNumber"):
            ds.SeriesNumber = 3
        if not ds.get("StudyID"):
            ds.StudyID = "1"
        target = folder / f"{path.name}.dcm"
        # Pixel data stays encapsulated JPEG 2000: the dataset is written as read.
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    if not written:
        raise FileNotFoundError(f"no instances in {source}")
    return written
