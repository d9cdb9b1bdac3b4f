"""Hand-built DICOM upper-layer bytes (PS3.8 9.3) and a raw-socket peer, for hostile-input tests.

No pynetdicom on the sending side: the point is to send what no well-behaved library would.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
SUCCESS = 0x0000


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def pdu(pdu_type: int, body: bytes, declared: int | None = None) -> bytes:
    """A PDU; ``declared`` overrides the length field (to lie about it)."""
    length = len(body) if declared is None else declared
    return struct.pack(">BBI", pdu_type, 0, length) + body


def associate_rq_body(
    called: str = "VLNODE",
    calling: str = "FUZZER",
    syntaxes: tuple[str, ...] = (IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE),
    max_pdu: int = 16384,
    version: int = 1,
) -> bytes:
    """An A-ASSOCIATE-RQ's variable part: one CT storage context per transfer syntax."""
    contexts = b""
    for index, syntax in enumerate(syntaxes):
        context_id = 2 * index + 1
        contexts += _item(
            0x20,
            struct.pack(">BBBB", context_id, 0, 0, 0)
            + _item(0x30, _uid(CTImageStorage))
            + _item(0x40, _uid(syntax)),
        )
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, _uid("1.2.826.0.1.3680043.9.1"))
    return (
        struct.pack(">HH", version, 0)
        + called.encode().ljust(16)
        + calling.encode().ljust(16)
        + b"\0" * 32
        + _item(0x10, _uid(APPLICATION_CONTEXT))
        + contexts
        + _item(0x50, user)
    )


def pdv(context_id: int, control: int, data: bytes, declared: int | None = None) -> bytes:
    """A presentation data value item: control 0x03 command/last, 0x02 data/last, 0x00 data."""
    length = len(data) + 2 if declared is None else declared
    return struct.pack(">IBB", length, context_id, control) + data


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def c_store_rq(sop_instance_uid: str, message_id: int = 1, with_data_set: bool = True) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian, PS3.7 9.3.1.1)."""
    body = (
        _element(0, 0x0002, _uid(CTImageStorage))
        + _element(0, 0x0100, struct.pack("<H", 0x0001))
        + _element(0, 0x0110, struct.pack("<H", message_id))
        + _element(0, 0x0700, struct.pack("<H", 0))
        + _element(0, 0x0800, struct.pack("<H", 0x0000 if with_data_set else 0x0101))
        + _element(0, 0x1000, _uid(sop_instance_uid))
    )
    return _element(0, 0x0000, struct.pack("<I", len(body))) + body


def encode_data_set(ds: Dataset, syntax: str) -> bytes:
    """The data set alone (no preamble, no file meta) in implicit or explicit VR LE."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = syntax == IMPLICIT_LE
    write_dataset(buffer, ds)
    return buffer.getvalue()


@dataclass(frozen=True)
class Answer:
    """What the node sent back, in PDU types, and the C-STORE response statuses in them."""

    pdu_types: tuple[int, ...]
    statuses: tuple[int, ...]
    closed_by_node: bool

    @property
    def refused(self) -> bool:
        """An A-ASSOCIATE-RJ or an A-ABORT."""
        return A_ASSOCIATE_RJ in self.pdu_types or A_ABORT in self.pdu_types

    @property
    def failed_store(self) -> bool:
        return any(code != SUCCESS for code in self.statuses)


def converse(
    port: int,
    stream: bytes,
    half_close: bool,
    expected_responses: int,
    after_accept: bytes = b"",
    timeout: float = 10.0,
) -> Answer:
    """Send ``stream``; read the node's PDUs until it refuses, closes, or has answered.

    ``after_accept`` is sent once the node accepted the association (``stream`` being the
    A-ASSOCIATE-RQ), as a peer must wait for the A-ASSOCIATE-AC. ``half_close`` ends our side
    of the connection after everything is sent (a truncated stream: the node must see its
    end). The node has answered when it sent ``expected_responses`` C-STORE responses; we then
    abort as a peer that is done would. Raises TimeoutError if the node neither answers nor
    closes within ``timeout``.
    """
    types: list[int] = []
    statuses: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as peer:
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _PduReader(peer)
        # The node may cut us off mid-stream: what it sent is still readable.
        with contextlib.suppress(OSError):
            peer.sendall(stream)
        if after_accept:
            accepted = reader.next_pdu()
            if accepted is None:
                return Answer((), (), True)
            types.append(accepted[0])
            if accepted[0] != A_ASSOCIATE_AC:
                return Answer(tuple(types), (), False)
            with contextlib.suppress(OSError):
                peer.sendall(after_accept)
        if half_close:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_WR)
        closed = False
        while True:
            received = reader.next_pdu()
            if received is None:
                closed = True
                break
            pdu_type, body = received
            types.append(pdu_type)
            if pdu_type == P_DATA_TF:
                statuses.extend(_statuses(body))
            if pdu_type in (A_ASSOCIATE_RJ, A_ABORT, A_RELEASE_RP):
                break
            if expected_responses and len(statuses) >= expected_responses:
                break
        if not closed:
            with contextlib.suppress(OSError):
                peer.sendall(pdu(A_ABORT, b"\0\0\0\0"))
    return Answer(tuple(types), tuple(statuses), closed)


class _PduReader:
    def __init__(self, peer: socket.socket) -> None:
        self.peer = peer

    def _exactly(self, count: int) -> bytes | None:
        data = b""
        while len(data) < count:
            try:
                chunk = self.peer.recv(count - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def next_pdu(self) -> tuple[int, bytes] | None:
        header = self._exactly(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBI", header)
        body = self._exactly(length)
        return None if body is None else (pdu_type, body)


def _statuses(p_data_body: bytes) -> list[int]:
    """Status values of the command sets in a P-DATA-TF PDU's PDV items."""
    found = []
    offset = 0
    while offset + 6 <= len(p_data_body):
        length, _context, control = struct.unpack_from(">IBB", p_data_body, offset)
        data = p_data_body[offset + 6 : offset + 4 + length]
        offset += 4 + length
        if not control & 0x01:
            continue
        at = 0
        while at + 8 <= len(data):
            group, element, size = struct.unpack_from("<HHI", data, at)
            if (group, element) == (0x0000, 0x0900) and size == 2:
                found.append(struct.unpack_from("<H", data, at + 8)[0])
            at += 8 + size
    return found
