"""Byte-level encoders for the two small structures written once per received instance.

pynetdicom builds the C-STORE response command set and the stored file's File Meta
Information as pydicom data sets (an object and a validation per element) and encodes them;
profiling put about 40% of the receive path's Python time there. Both structures are fixed
lists of a few elements, so they are written here directly. Tests compare the bytes with
pydicom's and pynetdicom's own encodings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101

_IMPLICIT_HEADER = struct.Struct("<HHI")  # group, element, 4-byte length
_EXPLICIT_SHORT = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length
_EXPLICIT_LONG = struct.Struct("<HH2s2xI")  # group, element, VR, reserved, 4-byte length


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def _implicit(element: int, value: bytes) -> bytes:
    return _IMPLICIT_HEADER.pack(0x0000, element, len(value)) + value


def c_store_response(
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    error_comment: str | None = None,
) -> bytes:
    """The command set of a C-STORE-RSP (PS3.7 9.3.1.2), implicit VR little endian.

    ``error_comment`` (0000,0902) is LO: at most 64 characters, no backslash.
    """
    elements = [
        _implicit(0x0002, _uid(sop_class_uid)),
        _implicit(0x0100, struct.pack("<H", _C_STORE_RSP)),
        _implicit(0x0120, struct.pack("<H", message_id)),
        _implicit(0x0800, struct.pack("<H", _NO_DATA_SET)),
        _implicit(0x0900, struct.pack("<H", status)),
    ]
    if error_comment:
        elements.append(_implicit(0x0902, _text(error_comment)))
    elements.append(_implicit(0x1000, _uid(sop_instance_uid)))
    body = b"".join(elements)
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


@dataclass(frozen=True)
class FileMeta:
    """What a received instance's File Meta Information says (PS3.10 7.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    implementation_class_uid: str
    implementation_version_name: str
    source_ae_title: str

    def encode(self) -> bytes:
        """The (0002,eeee) group, explicit VR little endian, without preamble and "DICM"."""
        elements = [
            _EXPLICIT_LONG.pack(0x0002, 0x0001, b"OB", 2) + b"\x00\x01",
            _short(0x0002, b"UI", _uid(self.sop_class_uid)),
            _short(0x0003, b"UI", _uid(self.sop_instance_uid)),
            _short(0x0010, b"UI", _uid(self.transfer_syntax_uid)),
            _short(0x0012, b"UI", _uid(self.implementation_class_uid)),
            _short(0x0013, b"SH", _text(self.implementation_version_name)),
        ]
        if self.source_ae_title:
            elements.append(_short(0x0016, b"AE", _text(self.source_ae_title)))
        body = b"".join(elements)
        return _short(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _short(element: int, vr: bytes, value: bytes) -> bytes:
    return _EXPLICIT_SHORT.pack(0x0002, element, vr, len(value)) + value
