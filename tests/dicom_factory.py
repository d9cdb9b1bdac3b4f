"""Build DICOM files on the fly for tests: CT series with real geometry, no patient data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_slice(
    study_uid: str,
    series_uid: str,
    index: int,
    rows: int = 64,
    columns: int = 64,
    *,
    series_number: int = 1,
) -> Dataset:
    """One axial CT slice of a synthetic series, 2.5 mm apart along z."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientName = "TEST^PHANTOM"
    ds.PatientID = "PHANTOM-001"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -100.0, index * 2.5]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) + index) % 4096
    ds.PixelData = pixels.tobytes()
    return ds


def write_ct_study(
    folder: Path, series_counts: tuple[int, ...], rows: int = 64, columns: int = 64
) -> tuple[str, list[Path]]:
    """Write a multi-series CT study; return its Study Instance UID and the files."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    files = []
    for number, count in enumerate(series_counts, start=1):
        series_uid = generate_uid()
        for index in range(count):
            ds = ct_slice(study_uid, series_uid, index, rows, columns, series_number=number)
            path = folder / f"s{number:02d}_{index:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return study_uid, files


def iter_sop_uids(files: list[Path]) -> Iterator[str]:
    from pydicom import dcmread

    for path in files:
        yield str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
