"""The byte-level encoders write exactly what pydicom and pynetdicom would."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, JPEG2000Lossless, generate_uid
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicom_node.encoding import FileMeta, c_store_response


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000])
@pytest.mark.parametrize("sop_instance", ["1.2.3", "1.2.34", generate_uid()])
@pytest.mark.parametrize("comment", [None, "disk full", "odd"])
def test_c_store_response_matches_pynetdicom(
    status: int, sop_instance: str, comment: str | None
) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Status = status
    if comment is not None:
        primitive.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    message._set_command_group_length()
    expected = encode(message.command_set, True, True)
    assert c_store_response(7, status, CTImageStorage, sop_instance, comment) == expected


@pytest.mark.parametrize("source_ae", ["PACS", "ODD", ""])
def test_file_meta_matches_pydicom(source_ae: str, tmp_path: Path) -> None:
    sop_instance = generate_uid()
    meta = FileMeta(
        sop_class_uid=CTImageStorage,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=JPEG2000Lossless,
        implementation_class_uid="1.2.826.0.1.3680043.9.3811.3.0.4",
        implementation_version_name="PYNETDICOM_304",
        source_ae_title=source_ae,
    )
    encoded = meta.encode()
    expected = FileMetaDataset()
    expected.FileMetaInformationVersion = b"\x00\x01"
    expected.MediaStorageSOPClassUID = CTImageStorage
    expected.MediaStorageSOPInstanceUID = sop_instance
    expected.TransferSyntaxUID = JPEG2000Lossless
    expected.ImplementationClassUID = "1.2.826.0.1.3680043.9.3811.3.0.4"
    expected.ImplementationVersionName = "PYNETDICOM_304"
    if source_ae:
        expected.SourceApplicationEntityTitle = source_ae
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, expected)
    assert encoded == buffer.getvalue()
    path = tmp_path / "meta.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + encoded)
    read = read_file_meta_info(path)
    assert read.FileMetaInformationGroupLength == len(encoded) - 12
    assert read.FileMetaInformationVersion == b"\x00\x01"
    assert read.MediaStorageSOPClassUID == CTImageStorage
    assert read.MediaStorageSOPInstanceUID == sop_instance
    assert read.TransferSyntaxUID == JPEG2000Lossless
    assert read.ImplementationVersionName == "PYNETDICOM_304"
    assert read.get("SourceApplicationEntityTitle", "") == source_ae
