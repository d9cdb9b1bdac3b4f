"""C-STORE requests served from the PDU bytes (dicom_node.direct_store).

Command sets and responses are encoded and decoded with pynetdicom's own message classes, so
these tests check the direct path against pynetdicom's reading of the standard.
"""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode

from dicom_node import status
from dicom_node.direct_store import DirectStore, decode_store_command, p_data_tf
from dicom_node.incoming import IncomingFile

CONTEXT = 1
META = b"META"  # stands in for the File Meta Information group
PREFIX = b"\0" * 128 + b"DICM" + META  # what the stored file holds before the data set


def store_command(message_id: int, sop_instance: str, with_data_set: bool = True) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = 2
    if with_data_set:
        primitive.DataSet = BytesIO(b"\0\0")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    if not with_data_set:
        message.command_set.CommandDataSetType = 0x0101
    message._set_command_group_length()
    return bytes(encode(message.command_set, True, True))


def echo_command() -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    message._set_command_group_length()
    return bytes(encode(message.command_set, True, True))


def pdv(fragment: bytes, command: bool, last: bool, context: int = CONTEXT) -> bytes:
    control = (1 if command else 0) | (2 if last else 0)
    return struct.pack(">IBB", len(fragment) + 2, context, control) + fragment


class Peer:
    """Collects what the direct store sends and what it stores."""

    def __init__(self, folder: Path, result: int | Dataset = status.SUCCESS) -> None:
        self.folder = folder
        self.result = result
        self.sent: list[bytes] = []
        self.stored: list[tuple[bytes, str, str, str]] = []
        self.in_memory = 0  # data sets also handed over in memory

    def store(
        self,
        received: Path,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        write_failure: OSError | None,
        dataset: memoryview | None = None,
    ) -> int | Dataset:
        assert write_failure is None
        content = received.read_bytes()
        if dataset is not None:  # a data set in one fragment: handed over as well
            assert bytes(dataset) == content[len(PREFIX) :]
            self.in_memory += 1
        self.stored.append((content, transfer_syntax, sop_class_uid, sop_instance_uid))
        received.unlink()  # as the spool does when it links the file into place
        return self.result

    def direct_store(self, peer_max_pdu: int = 0) -> DirectStore:
        return DirectStore(
            transfer_syntaxes={CONTEXT: ExplicitVRLittleEndian},
            new_file=lambda: IncomingFile(self.folder),
            file_meta=lambda sop_class, sop_instance, syntax: META,
            store=self.store,
            send=self.sent.append,
            peer_max_pdu=peer_max_pdu,
        )

    def responses(self) -> list[Any]:
        """The C-STORE-RSP command sets sent, reassembled from their PDUs and decoded."""
        commands, current = [], b""
        for pdu in self.sent:
            assert pdu[0] == 0x04 and struct.unpack(">I", pdu[2:6])[0] == len(pdu) - 6
            length, context, control = struct.unpack(">IBB", pdu[6:12])
            assert context == CONTEXT and control & 1 and length == len(pdu) - 10
            current += pdu[12:]
            if control & 2:
                commands.append(decode(BytesIO(current), True, True))
                current = b""
        return commands


def test_decode_store_command_reads_what_pynetdicom_encodes() -> None:
    sop_instance = generate_uid()
    command = decode_store_command(store_command(42, sop_instance))
    assert command is not None
    assert (command.message_id, command.sop_class_uid, command.sop_instance_uid) == (
        42,
        CTImageStorage,
        sop_instance,
    )


@pytest.mark.parametrize(
    "encoded",
    [
        echo_command(),
        store_command(1, "1.2.3", with_data_set=False),
        store_command(1, "1.2.3")[:-3],  # truncated inside the last element
        b"\x02\x00\x00\x00\x04\x00\x00\x00abcd",  # not the command group
    ],
    ids=["c-echo", "no-data-set", "truncated", "wrong-group"],
)
def test_decode_store_command_declines_everything_else(encoded: bytes) -> None:
    assert decode_store_command(encoded) is None


def test_a_store_over_several_pdus_is_stored_and_answered(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    sop_instance = generate_uid()
    data = bytes(range(256)) * 40
    pdus = [
        pdv(store_command(5, sop_instance), command=True, last=True)
        + pdv(data[:1000], False, False),
        pdv(data[1000:5000], False, False) + pdv(data[5000:6000], False, False),
        pdv(data[6000:], False, True),
    ]
    for pdu in pdus[:-1]:
        assert direct.take(memoryview(pdu)) is None
        assert direct.receiving and not peer.stored and not peer.sent
    assert direct.take(memoryview(pdus[-1])) is None
    assert not direct.receiving
    assert peer.stored == [
        (b"\0" * 128 + b"DICM" + META + data, ExplicitVRLittleEndian, CTImageStorage, sop_instance)
    ]
    assert peer.in_memory == 0  # in four fragments: read back from the file
    (response,) = peer.responses()
    assert response.CommandField == 0x8001
    assert response.MessageIDBeingRespondedTo == 5
    assert response.Status == status.SUCCESS
    assert response.AffectedSOPInstanceUID == sop_instance
    assert "ErrorComment" not in response
    # pynetdicom reads it as the C-STORE-RSP it would have sent itself.
    message = C_STORE_RSP()
    message.command_set = response
    assert message.message_to_primitive().Status == status.SUCCESS


def test_a_data_set_in_one_fragment_is_handed_over_in_memory_too(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    data = bytes(range(256)) * 4
    pdu = pdv(store_command(3, "1.2.3.4"), True, True) + pdv(data, False, True)
    assert direct.take(memoryview(pdu)) is None
    assert peer.in_memory == 1  # and Peer.store checked it against the file's data set
    assert peer.stored[0][0].endswith(data)


def test_a_failure_is_answered_with_its_status_and_comment(tmp_path: Path) -> None:
    refusal = Dataset()
    refusal.Status = status.ERROR_CANNOT_UNDERSTAND
    refusal.ErrorComment = "truncated data set: café"
    peer = Peer(tmp_path, result=refusal)
    direct = peer.direct_store()
    pdu = pdv(store_command(1, "1.2.3"), True, True) + pdv(b"\0\0", False, True)
    assert direct.take(memoryview(pdu)) is None
    (response,) = peer.responses()
    assert response.Status == status.ERROR_CANNOT_UNDERSTAND
    assert response.ErrorComment == "truncated data set: caf?"


def test_an_exception_in_the_store_function_is_a_processing_failure(tmp_path: Path) -> None:
    peer = Peer(tmp_path)

    def broken(*_args: Any) -> int:
        raise RuntimeError("disk on fire")

    direct = peer.direct_store()
    direct.store = broken
    pdu = pdv(store_command(1, "1.2.3"), True, True) + pdv(b"\0\0", False, True)
    assert direct.take(memoryview(pdu)) is None
    assert [r.Status for r in peer.responses()] == [status.PROCESSING_FAILURE]
    assert list(tmp_path.iterdir()) == []  # the incoming file is gone


def test_other_messages_are_left_to_pynetdicom(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    echo = pdv(echo_command(), True, True)
    rest = direct.take(memoryview(echo))
    assert rest is not None and bytes(rest) == echo
    # A C-STORE on a context that was not accepted: pynetdicom aborts, as it always did.
    unknown = pdv(store_command(1, "1.2.3"), True, True, context=3)
    rest = direct.take(memoryview(unknown))
    assert rest is not None and bytes(rest) == unknown
    # A command set split over several fragments.
    command = store_command(1, "1.2.3")
    split = pdv(command[:20], True, False) + pdv(command[20:], True, True)
    rest = direct.take(memoryview(split))
    assert rest is not None and bytes(rest) == split
    assert not peer.sent and not peer.stored and not direct.receiving


def test_a_message_after_a_store_in_the_same_pdu_is_given_back(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    echo = pdv(echo_command(), True, True)
    pdu = pdv(store_command(1, "1.2.3"), True, True) + pdv(b"\0\0", False, True) + echo
    rest = direct.take(memoryview(pdu))
    assert rest is not None and bytes(rest) == echo
    assert len(peer.stored) == 1 and len(peer.responses()) == 1
    assert p_data_tf(rest) == b"\x04\x00" + struct.pack(">I", len(echo)) + echo


def test_a_data_set_interrupted_by_a_command_is_dropped(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    assert direct.take(memoryview(pdv(store_command(1, "1.2.3"), True, True))) is None
    assert direct.take(memoryview(pdv(b"\0" * 10, False, False))) is None
    echo = pdv(echo_command(), True, True)
    rest = direct.take(memoryview(echo))
    assert rest is not None and bytes(rest) == echo
    assert not direct.receiving and not peer.stored and not peer.sent
    assert list(tmp_path.iterdir()) == []


def test_discard_removes_a_partly_received_file(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    assert direct.take(memoryview(pdv(store_command(1, "1.2.3"), True, True))) is None
    assert len(list(tmp_path.iterdir())) == 1
    direct.discard()
    assert list(tmp_path.iterdir()) == [] and not direct.receiving


def test_malformed_items_are_given_back(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store()
    # An item that claims more bytes than the PDU holds.
    bad = struct.pack(">IBB", 500, CONTEXT, 3) + b"short"
    rest = direct.take(memoryview(bad))
    assert rest is not None and bytes(rest) == bad


def test_the_response_respects_the_peers_maximum_pdu_length(tmp_path: Path) -> None:
    peer = Peer(tmp_path)
    direct = peer.direct_store(peer_max_pdu=40)
    sop_instance = generate_uid()
    pdu = pdv(store_command(1, sop_instance), True, True) + pdv(b"\0\0", False, True)
    assert direct.take(memoryview(pdu)) is None
    assert len(peer.sent) > 1
    assert all(len(sent) - 6 <= 40 for sent in peer.sent)
    (response,) = peer.responses()
    assert response.AffectedSOPInstanceUID == sop_instance


def test_the_stored_file_is_sealed_whole_after_many_fragments(tmp_path: Path) -> None:
    from dicom_node.seal import can_seal, is_sealed_and_intact

    if not can_seal(tmp_path):
        pytest.skip("no extended attributes on the temporary folder's file system")
    sealed: list[bool] = []

    class SealCheckingPeer(Peer):
        def store(self, received: Path, *args: Any) -> int | Dataset:
            # Written back and sealed every 256 KiB: the last fragment must still be in.
            sealed.append(is_sealed_and_intact(received))
            return super().store(received, *args)

    peer = SealCheckingPeer(tmp_path)
    direct = peer.direct_store()
    data = bytes(range(256)) * 2404  # 601 KiB: the last of 11 fragments ends no 256 KiB step
    assert direct.take(memoryview(pdv(store_command(1, "1.2.3"), True, True))) is None
    for start in range(0, len(data), 61440):
        last = start + 61440 >= len(data)
        assert direct.take(memoryview(pdv(data[start : start + 61440], False, last))) is None
    assert sealed == [True]
    assert peer.stored[0][0].endswith(data)
