"""A chest X-ray as a DX DICOM instance, built from an image of ../shared/data/cxr-covid-notes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid


def chest_xray_dicom(shared_data: Path, out: Path, view: str = "PA") -> Path:
    """Write one ``view`` chest X-ray of the covid set as an 8-bit MONOCHROME2 DX instance."""
    folder = shared_data / "cxr-covid-notes"
    with (folder / "metadata.csv").open(newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["view"] == view)
    pixels = np.asarray(Image.open(folder / row["image"]).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "TEST^CHEST", "CHEST-TEST-1"
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", ""
    ds.ReferringPhysicianName, ds.StudyID = "", "1"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", view
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.Manufacturer = ""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = pixels.tobytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
