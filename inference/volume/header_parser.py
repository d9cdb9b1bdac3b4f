"""A small parser for the top-level attributes of little-endian Part 10 files, for speed.

Reading the header is most of the cost of rebuilding an uncompressed series once the pixels
go straight into their array. This parser reads the first bytes of a file and walks its
elements up to the last attribute wanted (all in groups 0002 to 0028), skipping sequences,
in a few microseconds per element. Anything it does not expect (no preamble, big endian,
deflate, a header longer than the bytes read, a malformed length) makes it return ``None``,
and the caller falls back to GDCM's full parser for that file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from pydicom.datadict import tag_for_keyword

_HEAD_BYTES = 16384
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
# Attributes stored as binary numbers (the rest of those wanted are text).
_UNSIGNED_SHORT = frozenset(
    tag_for_keyword(k) or 0
    for k in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PlanarConfiguration",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
    )
)
_DOUBLE = frozenset({tag_for_keyword("DiffusionBValue") or 0})

_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_tag = struct.Struct("<HH").unpack_from


class _Unparsable(Exception):
    """The bytes read do not fit the simple case: let GDCM parse this file."""


class TopLevelParser:
    """Reads chosen top-level attributes of files, as DICOM strings keyed by keyword."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._wanted = {tag_for_keyword(k) or 0: k for k in keywords}
        self._last = max(t for t in self._wanted if t >> 16 != 0x0002)

    def parse(self, path: Path) -> dict[str, str] | None:
        """The wanted attributes present in ``path``, or None when GDCM must parse it."""
        try:
            with open(path, "rb") as fp:
                data = fp.read(_HEAD_BYTES)
            return self._parse(data)
        except (_Unparsable, struct.error):
            return None

    def _parse(self, data: bytes) -> dict[str, str]:
        if data[128:132] != b"DICM":
            raise _Unparsable
        found: dict[str, str] = {}
        # The file meta group is always explicit VR little endian (PS3.10 7.1).
        position = self._elements(data, 132, implicit=False, found=found, meta_only=True)
        syntax = found.get("TransferSyntaxUID", "")
        if syntax == _BIG_ENDIAN or syntax in _DEFLATED or not syntax:
            raise _Unparsable
        self._elements(data, position, implicit=syntax == _IMPLICIT_LE, found=found)
        return found

    def _elements(
        self,
        data: bytes,
        position: int,
        *,
        implicit: bool,
        found: dict[str, str],
        meta_only: bool = False,
    ) -> int:
        """Walk top-level elements from ``position``; return where the walk stopped."""
        end = len(data)
        while position + 8 <= end:
            group, element = _tag(data, position)
            tag = group << 16 | element
            if meta_only and group != 0x0002:
                return position
            if tag > self._last and not meta_only:
                return position
            value, length, vr = _header(data, position, implicit)
            if length == _UNDEFINED:
                position = _skip_sequence(data, value, implicit or vr == b"UN")
                continue
            if value + length > end:
                raise _Unparsable
            keyword = self._wanted.get(tag)
            if keyword is not None:
                found[keyword] = _decode(tag, data[value : value + length])
            position = value + length
        raise _Unparsable  # the attributes run past the bytes read


def _header(data: bytes, position: int, implicit: bool) -> tuple[int, int, bytes]:
    """(value offset, value length, VR) of the element at ``position``."""
    if implicit:
        return position + 8, int(_u32(data, position + 4)[0]), b""
    vr = data[position + 4 : position + 6]
    if vr in _LONG_VRS:
        return position + 12, int(_u32(data, position + 8)[0]), vr
    if not vr.isalpha():
        raise _Unparsable
    return position + 8, int(_u16(data, position + 6)[0]), vr


def _skip_sequence(data: bytes, position: int, implicit: bool) -> int:
    """Skip the items of an undefined-length sequence; return the offset after its end."""
    end = len(data)
    while position + 8 <= end:
        group, element = _tag(data, position)
        tag = group << 16 | element
        length = int(_u32(data, position + 4)[0])
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Unparsable
        position = (
            _skip_item(data, position, implicit) if length == _UNDEFINED else position + length
        )
    raise _Unparsable


def _skip_item(data: bytes, position: int, implicit: bool) -> int:
    """Skip the elements of an undefined-length item; return the offset after its end."""
    end = len(data)
    while position + 8 <= end:
        group, element = _tag(data, position)
        if group << 16 | element == _ITEM_END:
            return position + 8
        value, length, vr = _header(data, position, implicit)
        if length == _UNDEFINED:
            position = _skip_sequence(data, value, implicit or vr == b"UN")
        else:
            position = value + length
    raise _Unparsable


def _decode(tag: int, raw: bytes) -> str:
    if tag in _UNSIGNED_SHORT:
        return str(_u16(raw)[0]) if len(raw) >= 2 else ""
    if tag in _DOUBLE:
        return repr(struct.unpack_from("<d", raw)[0]) if len(raw) >= 8 else ""
    # Only UIDs, codes and numbers matter here; a non-ASCII description is shown as "?".
    return raw.decode("ascii", errors="replace").strip(" \x00")
