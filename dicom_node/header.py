"""Walk an encoded data set's structure and read the few identifiers the node needs.

The receive path never decodes the data set: it steps over every element by its header
(tag, VR, length), reads the values of five UIDs/strings, and checks that the elements
account for every byte. A data set cut short or garbled in transit fails that check, so it
is quarantined instead of being stored as if it were whole (pydicom reads such data
leniently, which is right for a viewer and wrong for a receiver that acknowledges it).
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_node.errors import InvalidInstanceError

# Path components are built from UIDs, so only digits and dots are allowed (PS3.5 9.1).
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")

_WANTED = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
# Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# The other VRs of PS3.5 Table 6.2-1 (2-byte length). Anything else is not a VR: an element
# with "ZZ" in its VR field was walked as a short element and stored as if whole.
_SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_MAX_DEPTH = 32


@dataclass(frozen=True)
class InstanceIdentifiers:
    """What the spool and the store need to know about one instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str


class _Walker:
    """Steps over elements of one encoding; collects the wanted top-level values."""

    def __init__(self, data: memoryview, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        prefix = "<" if little else ">"
        self.tag_struct = struct.Struct(prefix + "HH")
        self.u16 = struct.Struct(prefix + "H")
        self.u32 = struct.Struct(prefix + "L")
        self.values: dict[str, str] = {}

    def _fail(self, offset: int, why: str) -> InvalidInstanceError:
        return InvalidInstanceError(f"data set is malformed at byte {offset}: {why}")

    def _tag(self, offset: int) -> int:
        if offset + 8 > len(self.data):
            raise self._fail(offset, "ends inside an element header (truncated)")
        group, element = self.tag_struct.unpack_from(self.data, offset)
        return int((group << 16) | element)

    def walk_dataset(self, offset: int, end: int, depth: int) -> int:
        """Walk elements from ``offset``; stop at ``end`` or an item delimiter when undefined."""
        data = self.data
        while offset < end:
            tag = self._tag(offset)
            if tag == _ITEM_END:
                return offset  # caller (an undefined-length item) consumes the delimiter
            if self.implicit or (tag >> 16) == 0xFFFE:
                vr = b""
                length = self.u32.unpack_from(data, offset + 4)[0]
                value_at = offset + 8
            else:
                vr = bytes(data[offset + 4 : offset + 6])
                if vr in _LONG_VRS:
                    if offset + 12 > len(data):
                        raise self._fail(offset, "ends inside an element header (truncated)")
                    length = self.u32.unpack_from(data, offset + 8)[0]
                    value_at = offset + 12
                elif vr in _SHORT_VRS:
                    length = self.u16.unpack_from(data, offset + 6)[0]
                    value_at = offset + 8
                else:
                    raise self._fail(
                        offset,
                        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has no valid VR ({vr!r})",
                    )
            if length == _UNDEFINED:
                if depth >= _MAX_DEPTH:
                    raise self._fail(offset, "sequences nested too deeply")
                offset = self._walk_undefined(value_at, depth + 1)
                continue
            next_offset = value_at + length
            if next_offset > len(data):
                raise self._fail(
                    offset,
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) claims {length} bytes but "
                    f"only {len(data) - value_at} remain (truncated)",
                )
            if depth == 0 and tag in _WANTED:
                raw = bytes(data[value_at:next_offset])
                self.values[_WANTED[tag]] = raw.decode("ascii", "replace").strip(" \x00")
            offset = next_offset
        if offset != end and end != len(self.data):
            raise self._fail(offset, "an item's elements overrun its declared length")
        return offset

    def _walk_undefined(self, offset: int, depth: int) -> int:
        """Items of an undefined-length sequence or encapsulated pixel data, to the delimiter."""
        data = self.data
        while True:
            tag = self._tag(offset)
            length = self.u32.unpack_from(data, offset + 4)[0]
            offset += 8
            if tag == _SEQUENCE_END:
                return offset
            if tag != _ITEM:
                raise self._fail(
                    offset - 8, f"expected an item, found ({tag >> 16:04X},{tag & 0xFFFF:04X})"
                )
            if length == _UNDEFINED:
                offset = self.walk_dataset(offset, len(data), depth)
                if self._tag(offset) != _ITEM_END:
                    raise self._fail(offset, "item has no delimiter (truncated)")
                offset += 8
            else:
                # A defined-length item (a nested data set or a pixel data fragment) is
                # stepped over whole; only its bounds are checked.
                if offset + length > len(data):
                    raise self._fail(offset, f"item claims {length} bytes (truncated)")
                offset += length


@functools.lru_cache(maxsize=64)
def _encoding(transfer_syntax_uid: str) -> tuple[bool, bool, bool]:
    """(deflated, implicit VR, little endian) of a transfer syntax; unknown ones read as
    explicit VR little endian, as compressed syntaxes are. Cached: pydicom's UID checks cost
    more than the rest of an instance's header reading."""
    syntax = UID(transfer_syntax_uid)
    if not syntax.is_transfer_syntax:
        return False, False, True
    return syntax == DeflatedExplicitVRLittleEndian, syntax.is_implicit_VR, syntax.is_little_endian


def read_identifiers(encoded: bytes | memoryview, transfer_syntax_uid: str) -> InstanceIdentifiers:
    """Check the structure of a data set and return its identifiers (no file meta expected).

    Raises
    ------
    InvalidInstanceError
        The bytes are not a well-formed data set, or a required UID is missing or malformed.
    """
    deflated, implicit, little = _encoding(transfer_syntax_uid)
    data = memoryview(encoded)
    if deflated:
        try:
            data = memoryview(zlib.decompress(bytes(data), -zlib.MAX_WBITS))
        except zlib.error as exc:
            raise InvalidInstanceError(f"deflated data set cannot be inflated: {exc}") from exc
    if len(data) < 8:
        raise InvalidInstanceError(f"data set is only {len(data)} bytes long")
    walker = _Walker(data, implicit, little)
    end = walker.walk_dataset(0, len(data), 0)
    if end != len(data):
        raise InvalidInstanceError(
            f"data set is malformed at byte {end}: unexpected item delimiter at top level"
        )
    values = walker.values
    # SOP Class and Instance UIDs may be absent from the data set (some exporters keep them
    # only in the file meta); the C-STORE request carries them, so the caller fills them in.
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = values.setdefault(keyword, "")
        if not value and keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            raise InvalidInstanceError(f"data set has no {keyword}")
        if value and (len(value) > 64 or not UID_PATTERN.match(value)):
            raise InvalidInstanceError(f"{keyword} {value[:80]!r} is not a valid UID")
    return InstanceIdentifiers(
        sop_class_uid=values["SOPClassUID"],
        sop_instance_uid=values["SOPInstanceUID"],
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        modality=values.get("Modality", "")[:16],
    )


# A Part 10 file: 128-byte preamble, "DICM", then (0002,0000) UL in explicit VR little endian
# (tag, "UL", 2-byte length) whose 4-byte value is the length of the rest of the meta group.
_META_PREFIX = b"DICM\x02\x00\x00\x00UL\x04\x00"
_META_GROUP_LENGTH_AT = 128 + len(_META_PREFIX)
READ_WHOLE_UP_TO = 1 << 20


def dataset_offset(part10: bytes | memoryview | mmap.mmap) -> int:
    """Where the data set starts in a Part 10 file's bytes (after preamble and file meta)."""
    if len(part10) < _META_GROUP_LENGTH_AT + 4 or part10[128:_META_GROUP_LENGTH_AT] != _META_PREFIX:
        raise InvalidInstanceError(
            "not a DICOM Part 10 file (no DICM prefix and meta group length)"
        )
    group_length = int.from_bytes(
        part10[_META_GROUP_LENGTH_AT : _META_GROUP_LENGTH_AT + 4], "little"
    )
    offset = _META_GROUP_LENGTH_AT + 4 + group_length
    if offset > len(part10):
        raise InvalidInstanceError(f"file meta claims {group_length} bytes (truncated)")
    return offset


def read_file_identifiers(path: Path, transfer_syntax_uid: str) -> InstanceIdentifiers:
    """:func:`read_identifiers` on the data set of a Part 10 file.

    A file up to READ_WHOLE_UP_TO bytes is read at once; a larger one is mapped, and only its
    element headers are touched, so a large multi-frame file costs a few pages. (Mapping a
    9 KB image cost two more system calls, and unmapping it a TLB flush, per instance.)
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InvalidInstanceError("the received file is empty")
        content: bytes | mmap.mmap
        if size <= READ_WHOLE_UP_TO:
            content = os.pread(fd, size, 0)
        else:
            content = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    # A mapping is unmapped when the last view of it goes (not closed here: an exception's
    # traceback may still hold a view, and closing a mapping with views raises).
    return read_identifiers(memoryview(content)[dataset_offset(content) :], transfer_syntax_uid)
