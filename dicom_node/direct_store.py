"""C-STORE requests served on the association's network thread, from the PDU bytes.

pynetdicom turns every received P-DATA-TF PDU into objects (PDU, P-DATA primitive, DIMSE
message, C-STORE primitive with validated UIDs), runs the state machine, queues the message
for the association's second thread, which calls the handler, and queues the response back to
the first thread to be encoded and sent. For a node that receives hundreds of images a second
that machinery, and the hand-off between two threads per association, cost more than storing
the images: with four associations in one process eight threads took turns at the GIL.

:class:`DirectStore` serves a C-STORE request where its bytes arrive. It reads the PDV items
of each P-DATA-TF PDU (PS3.8 9.3.5, Annex E), decodes the few command elements it needs
(PS3.7 9.3.1.1; command sets are implicit VR little endian), writes the data set fragments to
the spool's incoming file as they arrive (the same file, preamble and File Meta Information
that pynetdicom's chunked reception writes; sealed and written back every 256 KiB and at the
end rather than per fragment), calls the store function when the last fragment
is in, and sends the C-STORE-RSP. Everything else (C-ECHO, a request on a context that was not
accepted, a command it cannot decode, a command split over several PDUs) is left to pynetdicom
untouched: :meth:`DirectStore.take` returns the PDV items it did not take, and the caller
hands them to pynetdicom as a P-DATA-TF PDU of their own.

This module knows bytes only; dicom_node.pynetdicom_tuning decides when it is used and
connects it to pynetdicom's network thread.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from dicom_node import status
from dicom_node.encoding import c_store_response
from dicom_node.incoming import WRITEBACK_EVERY, IncomingFile

log = logging.getLogger(__name__)

_P_DATA_TF = 0x04
_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
_PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, control header
_PDU_HEADER = struct.Struct(">BBI")  # type, reserved, length
_COMMAND_ELEMENT = struct.Struct("<HHI")  # group, element, length (implicit VR LE)
_US = struct.Struct("<H")
_IS_COMMAND = 0x01  # message control header bits (PS3.8 E.2)
_IS_LAST = 0x02
_PREAMBLE = b"\x00" * 128 + b"DICM"


class StoreFunction(Protocol):
    """Stores one completely received Part 10 file; returns the DIMSE status (see receiver)."""

    def __call__(
        self,
        received: Path,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        write_failure: OSError | None,
        dataset: memoryview | None = None,
    ) -> int | Dataset: ...


@dataclass(frozen=True)
class StoreCommand:
    """The elements of a C-STORE-RQ command set that storing needs."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


def decode_store_command(encoded: bytes | memoryview) -> StoreCommand | None:
    """The C-STORE-RQ in an encoded command set, or None for anything else.

    None also for a command set that is not well formed, or a C-STORE-RQ without a data set:
    pynetdicom then decodes it and answers as it always does.
    """
    values: dict[int, memoryview] = {}
    view = memoryview(encoded)
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = _COMMAND_ELEMENT.unpack_from(view, offset)
        offset += 8
        if group != 0x0000 or length > end - offset:
            return None
        values[element] = view[offset : offset + length]
        offset += length
    try:
        command_field = _US.unpack(values[0x0100])[0]
        data_set_type = _US.unpack(values[0x0800])[0]
        message_id = _US.unpack(values[0x0110])[0]
        sop_class = _uid(values[0x0002])
        sop_instance = _uid(values[0x1000])
    except (KeyError, struct.error, UnicodeDecodeError):
        return None
    if command_field != _C_STORE_RQ or data_set_type == _NO_DATA_SET:
        return None
    if not sop_class or not sop_instance:
        return None
    return StoreCommand(message_id, sop_class, sop_instance)


def _uid(value: memoryview) -> str:
    return bytes(value).decode("ascii").rstrip("\0 ")


class _Message:
    """A C-STORE request whose data set is arriving."""

    def __init__(self, command: StoreCommand, context_id: int, incoming: IncomingFile) -> None:
        self.command = command
        self.context_id = context_id
        self.incoming = incoming
        self.fragments = 0


class DirectStore:
    """Serves the C-STORE requests of one association (see the module's text).

    Parameters
    ----------
    transfer_syntaxes
        The accepted presentation contexts: context ID to transfer syntax UID.
    new_file
        Opens the incoming file a data set is written to (``Spool.new_incoming_file``).
    file_meta
        Encodes the File Meta Information group for (SOP class, SOP instance, transfer syntax).
    store
        Stores a completely received file and returns the DIMSE status.
    send
        Sends bytes to the peer (a whole PDU at a time).
    peer_max_pdu
        The largest PDU the peer accepts (its A-ASSOCIATE-RQ's maximum length; 0: no limit).
    """

    def __init__(
        self,
        transfer_syntaxes: dict[int, str],
        new_file: Callable[[], IncomingFile],
        file_meta: Callable[[str, str, str], bytes],
        store: StoreFunction,
        send: Callable[[bytes], None],
        peer_max_pdu: int = 0,
    ) -> None:
        self.transfer_syntaxes = transfer_syntaxes
        self.new_file = new_file
        self.file_meta = file_meta
        self.store = store
        self.send = send
        self.peer_max_pdu = peer_max_pdu
        self._message: _Message | None = None

    @property
    def receiving(self) -> bool:
        """A request's data set is partly received."""
        return self._message is not None

    def take(self, items: memoryview) -> memoryview | None:
        """Serve what a P-DATA-TF PDU carries; return the PDV items left for pynetdicom.

        ``items`` is the PDU without its 6-byte header. The return value is None when every
        item was taken, else the items from the first one not taken to the end.
        """
        offset, end = 0, len(items)
        while offset < end:
            if end - offset < _PDV_HEADER.size:
                return self._give_back(items, offset)
            length, context_id, control = _PDV_HEADER.unpack_from(items, offset)
            fragment_end = offset + 4 + length
            if length < 2 or fragment_end > end:
                return self._give_back(items, offset)
            fragment = items[offset + 6 : fragment_end]
            message = self._message
            if message is None:
                # A new message: take it only if its whole command set is in this item.
                if control & (_IS_COMMAND | _IS_LAST) != _IS_COMMAND | _IS_LAST:
                    return self._give_back(items, offset)
                command = decode_store_command(fragment)
                syntax = self.transfer_syntaxes.get(context_id)
                if command is None or syntax is None:
                    return self._give_back(items, offset)
                self._message = self._start(command, context_id, syntax)
            elif control & _IS_COMMAND or context_id != message.context_id:
                # Not the data set we are receiving: a peer out of step with PS3.8 Annex E.
                log.warning(
                    "SOP Instance %s: the data set was interrupted by another message; dropped",
                    message.command.sop_instance_uid,
                )
                self.discard()
                return self._give_back(items, offset)
            else:
                message.incoming.write(fragment)
                message.fragments += 1
                if control & _IS_LAST or message.incoming.unflushed >= WRITEBACK_EVERY:
                    message.incoming.flush()
                if control & _IS_LAST:
                    self._message = None
                    # A data set that came in one fragment is at hand: its identifiers are
                    # read from memory rather than from the file just written.
                    self._finish(message, fragment if message.fragments == 1 else None)
            offset = fragment_end
        return None

    def discard(self) -> None:
        """Drop a partly received data set (the association ended, or the peer broke off)."""
        message, self._message = self._message, None
        if message is not None:
            message.incoming.close()
            message.incoming.discard()

    def _give_back(self, items: memoryview, offset: int) -> memoryview | None:
        return items[offset:] if offset < len(items) else None

    def _start(self, command: StoreCommand, context_id: int, syntax: str) -> _Message:
        incoming = self.new_file()
        incoming.write(_PREAMBLE)
        incoming.write(self.file_meta(command.sop_class_uid, command.sop_instance_uid, syntax))
        return _Message(command, context_id, incoming)

    def _finish(self, message: _Message, dataset: memoryview | None) -> None:
        command, incoming = message.command, message.incoming
        incoming.close()
        try:
            result = self.store(
                Path(incoming.name),
                self.transfer_syntaxes[message.context_id],
                command.sop_class_uid,
                command.sop_instance_uid,
                incoming.failure,
                dataset,
            )
        except Exception:  # the store function answers for itself; this is the last resort
            log.exception("storing SOP Instance %s failed", command.sop_instance_uid)
            result = status.PROCESSING_FAILURE
        finally:
            incoming.discard()  # normally renamed or quarantined already
        code, comment = _status_and_comment(result)
        response = c_store_response(
            command.message_id, code, command.sop_class_uid, command.sop_instance_uid, comment
        )
        self._send_command(response, message.context_id)

    def _send_command(self, command: bytes, context_id: int) -> None:
        # One PDV per PDU, as many as the peer's maximum PDU length calls for (one, in practice).
        room = len(command)
        if self.peer_max_pdu:
            room = max(1, self.peer_max_pdu - _PDV_HEADER.size)
        for start in range(0, len(command), room):
            fragment = command[start : start + room]
            control = _IS_COMMAND | (_IS_LAST if start + room >= len(command) else 0)
            item = _PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
            self.send(_PDU_HEADER.pack(_P_DATA_TF, 0, len(item)) + item)


def p_data_tf(items: memoryview) -> bytes:
    """A P-DATA-TF PDU carrying ``items`` (PDV items, encoded)."""
    return _PDU_HEADER.pack(_P_DATA_TF, 0, len(items)) + bytes(items)


def _status_and_comment(result: int | Dataset) -> tuple[int, str | None]:
    if isinstance(result, int):
        return result, None
    comment = result.get("ErrorComment")
    if not comment:
        return int(result.Status), None
    # LO (PS3.5 6.2): the default character repertoire, no backslash, 64 characters.
    text = str(comment).encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return int(result.Status), text[:64]
