"""The receive path's header reader, in every uncompressed transfer syntax."""

from __future__ import annotations

import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

from dicom_node.errors import InvalidInstanceError
from dicom_node.header import read_identifiers


def encoded_data_set(ds: Dataset, syntax: str) -> bytes:
    implicit = syntax == ImplicitVRLittleEndian
    little = syntax != ExplicitVRBigEndian
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = little, implicit
    write_dataset(buffer, ds)
    raw = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = deflater.compress(raw) + deflater.flush()
    return raw


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        JPEG2000Lossless,  # the data set outside Pixel Data is explicit VR little endian
    ],
)
def test_identifiers_in_each_transfer_syntax(syntax: str) -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Not^Logged"
    for _ in range(2):  # the second time from the cached syntax flags
        ids = read_identifiers(encoded_data_set(ds, syntax), syntax)
        assert (ids.sop_instance_uid, ids.study_instance_uid, ids.series_instance_uid) == (
            ds.SOPInstanceUID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
        )
        assert ids.modality == "CT"


def test_a_data_set_read_in_the_wrong_syntax_is_refused() -> None:
    ds = Dataset()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    with pytest.raises(InvalidInstanceError):
        read_identifiers(encoded_data_set(ds, ExplicitVRBigEndian), ExplicitVRLittleEndian)
