"""Read the headers of a series' files, and where their pixel bytes start, without the pixels.

Reading headers first lets the rebuild check the geometry of the whole series before any
pixel is read, and then read every native frame straight into its place in one array. The
top-level attributes a stack needs are read by a small parser of our own for the common
little-endian files (:mod:`inference.volume.header_parser`) and by GDCM's ``Scanner`` for the
others; the whole header is parsed by pydicom only where nested sequences are needed
(enhanced multi-frame, LUTs of projection images).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import gdcm
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ImplicitVRLittleEndian

from inference.volume.header_parser import TopLevelParser
from inference.volume.types import VolumeError

# The top-level attributes read for every file (all before the pixel data).
KEYWORDS = (
    "TransferSyntaxUID",
    "MediaStorageSOPInstanceUID",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesDescription",
    "SliceThickness",
    "SpacingBetweenSlices",
    "EchoNumbers",
    "DiffusionBValue",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "TemporalPositionIdentifier",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
)  # GDCM reads each file only up to the last of these: keep them all before group 0029
_TAGS = tuple(tag_for_keyword(k) or 0 for k in KEYWORDS)
_PARSER = TopLevelParser(KEYWORDS)

_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_NATIVE_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB")


@dataclass(frozen=True)
class InstanceHeader:
    """One instance's top-level attributes, as DICOM strings, and its transfer syntax."""

    path: Path
    values: Mapping[str, str]  # keyword -> value; multiple values joined by a backslash
    transfer_syntax: UID
    # Parsed numbers by keyword: each is asked for many times while stacks are checked.
    _numbers: dict[str, tuple[float, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @cached_property
    def dataset(self) -> Dataset:
        """The whole header parsed by pydicom (read on first use: nested sequences, LUTs)."""
        try:
            return pydicom.dcmread(self.path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise VolumeError(f"{self.path.name}: not a readable DICOM file ({exc})") from exc

    def text(self, keyword: str, default: str = "") -> str:
        value = self.values.get(keyword)
        return value if value else default

    def numbers(self, keyword: str) -> tuple[float, ...]:
        """A numeric value of any multiplicity; empty when absent. Raises VolumeError."""
        cached = self._numbers.get(keyword)
        if cached is not None:
            return cached
        value = self.values.get(keyword)
        try:
            found = tuple(float(v) for v in value.split("\\")) if value else ()
        except ValueError as exc:
            raise VolumeError(f"{self.path.name}: unreadable {keyword} {value!r}") from exc
        self._numbers[keyword] = found
        return found

    def number(self, keyword: str, default: float | None = None) -> float | None:
        found = self.numbers(keyword)
        return found[0] if found else default

    def integer(self, keyword: str, default: int = 0) -> int:
        found = self.numbers(keyword)
        return int(found[0]) if found else default

    def has(self, keyword: str) -> bool:
        return keyword in self.values

    @property
    def may_have_functional_groups(self) -> bool:
        """Whether the plane may live in functional groups (enhanced multi-frame) rather than
        in top-level attributes; only then is the whole header parsed."""
        return self.number_of_frames > 1 or not self.has("ImagePositionPatient")

    @property
    def sop_instance_uid(self) -> str:
        """SOPInstanceUID, else the file meta's copy (anonymisers sometimes blank only one)."""
        return self.text("SOPInstanceUID") or self.text("MediaStorageSOPInstanceUID")

    @cached_property
    def number_of_frames(self) -> int:
        return self.integer("NumberOfFrames", 1) or 1

    @property
    def big_endian(self) -> bool:
        return not self.transfer_syntax.is_little_endian

    @cached_property
    def native(self) -> bool:
        """Whether the stored bytes are the pixel values (no decoding, no rearranging)."""
        syntax = self.transfer_syntax
        samples = self.integer("SamplesPerPixel", 1)
        return (
            not syntax.is_compressed
            and not syntax.is_deflated
            and self.integer("BitsAllocated") in (8, 16, 32)
            and samples in (1, 3)
            and (samples == 1 or self.integer("PlanarConfiguration") == 0)
            and self.text("PhotometricInterpretation") in _NATIVE_PHOTOMETRIC
        )

    @cached_property
    def frame_bytes(self) -> int:
        return (
            self.integer("Rows")
            * self.integer("Columns")
            * self.integer("SamplesPerPixel", 1)
            * (self.integer("BitsAllocated") // 8)
        )


def read_headers(paths: Sequence[Path]) -> list[InstanceHeader]:
    """Read the top-level attributes of ``paths``: our parser for the common little-endian
    files, GDCM's ``Scanner`` for the others.

    Raises
    ------
    VolumeError
        When a file is not DICOM or holds no pixel data.
    """
    parsed = [_PARSER.parse(path) for path in paths]
    missing = [path for path, values in zip(paths, parsed, strict=True) if values is None]
    scanned = dict(zip(missing, _scan(missing), strict=True)) if missing else {}
    headers = []
    for path, values in zip(paths, parsed, strict=True):
        if values is None:
            values = scanned[path]
        if values is None:
            raise VolumeError(f"{path.name}: not a readable DICOM file")
        if "Rows" not in values:
            sop_class = values.get("SOPClassUID") or "?"
            raise VolumeError(f"{path.name}: no pixel data (SOP class {sop_class})")
        syntax = UID(values.get("TransferSyntaxUID") or ImplicitVRLittleEndian)
        headers.append(InstanceHeader(path, values, syntax))
    return headers


def _scan(paths: Sequence[Path]) -> list[dict[str, str] | None]:
    """The wanted attributes of each file by GDCM's Scanner; None for a file not DICOM."""
    scanner = gdcm.Scanner()
    tags = [gdcm.Tag(t >> 16, t & 0xFFFF) for t in _TAGS]
    for tag in tags:
        scanner.AddTag(tag)
    names = [str(p) for p in paths]
    scanner.Scan(names)
    found: list[dict[str, str] | None] = []
    for name in names:
        if not scanner.IsKey(name):
            found.append(None)
            continue
        values = {}
        for keyword, tag in zip(KEYWORDS, tags, strict=True):
            value = scanner.GetValue(name, tag)
            if value is not None:
                values[keyword] = value.strip(" \x00")
        found.append(values)
    return found


def scan_series(paths: Sequence[Path]) -> list[tuple[str | None, str | None]]:
    """(MediaStorageSOPClassUID, SeriesInstanceUID) of each file; ``(None, None)`` for a file
    that is not DICOM. Reads each file only up to the SeriesInstanceUID."""
    scanner = gdcm.Scanner()
    sop_class, series = gdcm.Tag(0x0002, 0x0002), gdcm.Tag(0x0020, 0x000E)
    scanner.AddTag(sop_class)
    scanner.AddTag(series)
    names = [str(p) for p in paths]
    scanner.Scan(names)
    found: list[tuple[str | None, str | None]] = []
    for name in names:
        if not scanner.IsKey(name):
            found.append((None, None))
            continue
        values = (scanner.GetValue(name, sop_class), scanner.GetValue(name, series))
        found.append(
            (
                values[0].strip(" \x00") if values[0] else "",
                values[1].strip(" \x00") if values[1] else None,
            )
        )
    return found


def native_pixel_offset(fp: BinaryIO, instance: InstanceHeader) -> int:
    """Byte offset of the Pixel Data value in the open file of a native ``instance``.

    Raises
    ------
    VolumeError
        When the file has no Pixel Data element, or less data than its frames need.
    """
    syntax = instance.transfer_syntax
    length = instance.frame_bytes * instance.number_of_frames
    padded = length + length % 2
    element = 8 if syntax.is_implicit_VR else 12
    # Pixel Data is nearly always the last element: look for its header right before the
    # last ``padded`` bytes of the file, and parse the header only when it is not there.
    start = os.fstat(fp.fileno()).st_size - padded - element
    if start > 0:
        fp.seek(start)
        offset, found = _pixel_value_location(fp.read(element), syntax)
        if offset == element and found == padded:
            return start + element
    fp.seek(0)
    try:
        pydicom.dcmread(fp, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, struct.error, ValueError) as exc:
        raise VolumeError(f"{instance.path.name}: not a readable DICOM file ({exc})") from exc
    # pydicom rewinds to the tag of the element it stopped at: the Pixel Data element.
    tag_at = fp.tell()
    offset, found = _pixel_value_location(fp.read(12), syntax)
    if offset is None or found == 0:
        sop_class = instance.text("SOPClassUID", "?")
        raise VolumeError(f"{instance.path.name}: no pixel data (SOP class {sop_class})")
    if found == _UNDEFINED_LENGTH or found < length:
        raise VolumeError(
            f"{instance.path.name}: {found} bytes of pixel data where Rows x Columns x "
            f"frames needs {length}"
        )
    return tag_at + offset


def _pixel_value_location(element: bytes, syntax: UID) -> tuple[int | None, int]:
    """Offset of the value from the tag, and the value length, of a Pixel Data element.

    Returns ``(None, 0)`` when ``element`` is not a Pixel Data element header.
    """
    if len(element) < 8 or element[:4] not in (_PIXEL_DATA_TAG_LE, _PIXEL_DATA_TAG_BE):
        return None, 0
    endian = "<" if syntax.is_little_endian else ">"
    if syntax.is_implicit_VR:
        return 8, int(struct.unpack(endian + "I", element[4:8])[0])
    if len(element) < 12:
        return None, 0
    return 12, int(struct.unpack(endian + "I", element[8:12])[0])
