"""DICOM instances built on the fly for the volume tests (no patient data, small matrices)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.77"


def _base(sop_class: UID, modality: str, series_uid: str, study_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 3
    return ds


def _pixels(ds: Dataset, pixels: npt.NDArray[np.integer], bits_stored: int) -> None:
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def ct_slice(
    pixels: npt.NDArray[np.integer],
    position: Sequence[float],
    *,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float] = (0.5, 0.75),
    instance_number: int = 1,
    rescale: tuple[float, float] | None = (1.0, -1024.0),
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    bits_stored: int = 12,
) -> Dataset:
    """One classic CT image at ``position`` (LPS mm) with the given stored values."""
    ds = _base(CTImageStorage, "CT", series_uid, study_uid)
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 2.0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    _pixels(ds, pixels, bits_stored)
    return ds


def ct_stack(
    count: int,
    *,
    rows: int = 6,
    columns: int = 5,
    step: Sequence[float] = (0.0, 0.0, 2.0),
    origin: Sequence[float] = (-10.0, -20.0, 30.0),
    series_uid: str | None = None,
    **options: object,
) -> tuple[list[Dataset], npt.NDArray[np.uint16]]:
    """A regular stack of ``count`` slices; returns the datasets and the stored values,
    slice ``k`` at ``origin + k * step`` and holding ``values[k]``."""
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(count)
    values = rng.integers(0, 4096, size=(count, rows, columns), dtype=np.uint16)
    datasets = [
        ct_slice(
            values[k],
            np.asarray(origin) + k * np.asarray(step),
            series_uid=series_uid,
            instance_number=k + 1,
            **options,  # type: ignore[arg-type]
        )
        for k in range(count)
    ]
    return datasets, values


def write(
    datasets: Sequence[Dataset], folder: Path, names: Sequence[str] | None = None
) -> list[Path]:
    """Write ``datasets`` as files in ``folder`` (named ``names`` or by index)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / (names[index] if names else f"{index:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dx_image(
    pixels: npt.NDArray[np.integer],
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    series_uid: str | None = None,
) -> Dataset:
    """A DX image for presentation (no plane geometry), with ImagerPixelSpacing only."""
    ds = _base(
        DigitalXRayImageStorageForPresentation, "DX", series_uid or generate_uid(), generate_uid()
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    _pixels(ds, pixels, bits_stored)
    ds.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    return ds


def enhanced_ct(
    values: npt.NDArray[np.uint16],
    positions: Sequence[Sequence[float]],
    *,
    spacing: tuple[float, float] = (0.5, 0.75),
    rescale: tuple[float, float] = (1.0, -1024.0),
) -> Dataset:
    """An enhanced CT with one frame per ``values[k]`` at ``positions[k]``; orientation,
    spacing and rescale are in the shared functional groups, positions per frame."""
    ds = _base(EnhancedCTImageStorage, "CT", generate_uid(), generate_uid())
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
    ds.NumberOfFrames = len(values)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = list(spacing)
    measures.SliceThickness = 2.0
    shared.PixelMeasuresSequence = DicomSequence([measures])
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = rescale
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for position in positions:
        frame = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [float(v) for v in position]
        frame.PlanePositionSequence = DicomSequence([plane])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    _pixels(ds, values, 12)
    return ds
