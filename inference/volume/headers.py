"""Read one instance's header, and where its pixel bytes start, without reading the pixels.

Reading headers first lets the rebuild check the geometry of the whole series before any
pixel is read, and then read every native frame straight into its place in one array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from inference.volume.types import VolumeError

_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class InstanceHeader:
    """One instance's attributes (no pixels) and where its native pixel bytes are.

    ``pixel_offset`` is the byte offset of the Pixel Data value in the file when the pixels
    are stored uncompressed and can be read as they are; ``None`` when they must be decoded
    (encapsulated, deflated, bit-packed, planar or float data).
    """

    path: Path
    dataset: Dataset
    transfer_syntax: UID
    pixel_offset: int | None
    pixel_length: int

    @property
    def sop_instance_uid(self) -> str:
        """SOPInstanceUID, else the file meta's copy (anonymisers sometimes blank only one)."""
        uid = str(self.dataset.get("SOPInstanceUID") or "")
        if not uid and "file_meta" in self.dataset.__dict__:
            uid = str(self.dataset.file_meta.get("MediaStorageSOPInstanceUID") or "")
        return uid

    @property
    def number_of_frames(self) -> int:
        return int(self.dataset.get("NumberOfFrames") or 1)

    @property
    def big_endian(self) -> bool:
        return not self.transfer_syntax.is_little_endian


def read_instance(path: Path) -> InstanceHeader:
    """Read the header of one DICOM file and locate its pixel data.

    Raises
    ------
    VolumeError
        When the file is not DICOM or holds no pixel data.
    """
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            # pydicom rewinds to the tag of the element it stopped at: the Pixel Data element.
            tag_at = fp.tell()
            element = fp.read(12)
    except (InvalidDicomError, OSError, EOFError, struct.error) as exc:
        raise VolumeError(f"{path.name}: not a readable DICOM file ({exc})") from exc
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian))
    offset, length = _pixel_value_location(element, syntax)
    if length == 0:
        raise VolumeError(f"{path.name}: no pixel data (SOP class {ds.get('SOPClassUID', '?')})")
    native = (
        offset is not None
        and length != _UNDEFINED_LENGTH
        and not syntax.is_compressed
        and not syntax.is_deflated
        and int(ds.get("BitsAllocated", 0)) in (8, 16, 32)
        and int(ds.get("SamplesPerPixel", 1)) in (1, 3)
        and (int(ds.get("SamplesPerPixel", 1)) == 1 or int(ds.get("PlanarConfiguration", 0)) == 0)
        and str(ds.get("PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2", "RGB")
    )
    return InstanceHeader(
        path=path,
        dataset=ds,
        transfer_syntax=syntax,
        pixel_offset=tag_at + offset if native and offset is not None else None,
        pixel_length=length,
    )


def _pixel_value_location(element: bytes, syntax: UID) -> tuple[int | None, int]:
    """Offset of the value from the tag, and the value length, of a Pixel Data element.

    Returns ``(None, length)`` when the element cannot be parsed here (deflated stream,
    another element), and ``(None, 0)`` when there is no Pixel Data element at all.
    """
    if syntax.is_deflated:
        # pydicom inflated the stream in memory: file offsets mean nothing, decode instead.
        return None, _UNDEFINED_LENGTH
    if len(element) < 8:
        return None, 0
    tag = element[:4]
    if tag not in (_PIXEL_DATA_TAG_LE, _PIXEL_DATA_TAG_BE):
        return None, 0
    endian = "<" if syntax.is_little_endian else ">"
    if syntax.is_implicit_VR:
        return 8, int(struct.unpack(endian + "I", element[4:8])[0])
    if len(element) < 12:
        return None, 0
    return 12, int(struct.unpack(endian + "I", element[8:12])[0])
