"""Read the few identifiers the node needs from an encoded data set, without decoding it.

The receive path never decodes pixels: it parses elements up to SeriesInstanceUID
(0020,000E) and stops, whatever the data set's size.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_node.errors import InvalidInstanceError

# Path components are built from UIDs, so only digits and dots are allowed (PS3.5 9.1).
_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_LAST_TAG = 0x0020000E  # SeriesInstanceUID
_WANTED = [
    Tag(0x0008, 0x0016),  # SOPClassUID
    Tag(0x0008, 0x0018),  # SOPInstanceUID
    Tag(0x0008, 0x0060),  # Modality
    Tag(0x0020, 0x000D),  # StudyInstanceUID
    Tag(0x0020, 0x000E),  # SeriesInstanceUID
]


@dataclass(frozen=True)
class InstanceIdentifiers:
    """What the spool and the store need to know about one instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str


def _stop_after_series_uid(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) > _LAST_TAG


def read_identifiers(encoded: bytes | memoryview, transfer_syntax_uid: str) -> InstanceIdentifiers:
    """Parse the identifiers from a data set encoded in ``transfer_syntax_uid`` (no file meta).

    Raises
    ------
    InvalidInstanceError
        The bytes are not a parsable data set, or a required UID is missing or malformed.
    """
    syntax = UID(transfer_syntax_uid)
    data = bytes(encoded) if syntax == DeflatedExplicitVRLittleEndian else encoded
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, 1 << 20)
        except zlib.error as exc:
            raise InvalidInstanceError(f"deflated data set cannot be inflated: {exc}") from exc
    implicit = syntax.is_implicit_VR if syntax.is_transfer_syntax else False
    little = syntax.is_little_endian if syntax.is_transfer_syntax else True
    try:
        ds = read_dataset(
            BytesIO(data),
            is_implicit_VR=implicit,
            is_little_endian=little,
            stop_when=_stop_after_series_uid,
            specific_tags=_WANTED,
        )
        values = {
            keyword: str(ds.get(keyword, "") or "").strip()
            for keyword in (
                "SOPClassUID",
                "SOPInstanceUID",
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "Modality",
            )
        }
    except InvalidInstanceError:
        raise
    except Exception as exc:  # pydicom raises many types on garbage; all mean "cannot parse"
        raise InvalidInstanceError(f"data set cannot be parsed: {exc}") from exc
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = values[keyword]
        if not value:
            raise InvalidInstanceError(f"data set has no {keyword}")
        if len(value) > 64 or not _UID_PATTERN.match(value):
            raise InvalidInstanceError(f"{keyword} {value[:80]!r} is not a valid UID")
    return InstanceIdentifiers(
        sop_class_uid=values["SOPClassUID"],
        sop_instance_uid=values["SOPInstanceUID"],
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        modality=values["Modality"][:16],
    )
