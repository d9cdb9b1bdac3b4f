"""One test for each fault the listener fuzzer (test_fuzz_listener.py) found, fixed since."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_node.errors import InvalidInstanceError
from dicom_node.header import read_identifiers
from tests.dicom_node import raw_dicom as raw
from tests.dicom_node.test_listener import in_process_node
from tests.waiting import wait_for


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Any]:
    node = in_process_node(tmp_path / "vlnode-data", network_timeout=1.0, max_pdu=65536)
    node.start()
    yield node
    node.stop()


def association() -> bytes:
    return raw.pdu(raw.A_ASSOCIATE_RQ, raw.associate_rq_body(syntaxes=(raw.EXPLICIT_LE,)))


@pytest.mark.peer
def test_pdu_declaring_gigabytes_is_aborted_unread(node: Any) -> None:
    # Was: the node allocated the declared 4 GiB, then waited for them.
    huge = struct.pack(">BBI", raw.A_ASSOCIATE_RQ, 0, 2**32 - 1) + b"\0" * 64
    answer = raw.converse(node.settings.node.port, huge, False, 0)
    assert answer.pdu_types == (raw.A_ABORT,)


@pytest.mark.peer
def test_p_data_over_the_announced_maximum_is_aborted(node: Any) -> None:
    too_long = raw.pdu(raw.P_DATA_TF, raw.pdv(1, 0x02, b"\0" * 65536))
    answer = raw.converse(node.settings.node.port, association(), False, 0, too_long)
    assert answer.pdu_types == (raw.A_ASSOCIATE_AC, raw.A_ABORT)


@pytest.mark.peer
def test_garbage_right_after_the_request_is_aborted(node: Any) -> None:
    # Was: the garbage's event waited behind a blocking read of its own rest; no answer.
    answer = raw.converse(node.settings.node.port, association() + b"\x09" * 10, False, 0)
    assert answer.pdu_types == (raw.A_ABORT,)


@pytest.mark.peer
def test_peer_stalling_inside_a_pdu_header_is_cut_off(node: Any) -> None:
    # Was: the DUL thread blocked in recv until the peer closed, whatever the network timeout.
    with socket.create_connection(("127.0.0.1", node.settings.node.port), timeout=20) as peer:
        peer.sendall(b"\x01\x00\x00")  # three of the header's six bytes, then silence
        assert peer.recv(100) == b""  # the node closed the connection


@pytest.mark.peer
@pytest.mark.parametrize(
    "p_data",
    [
        raw.pdv(99, 0x03, raw.c_store_rq("1.2.3.4")),  # a context that was never accepted
        raw.pdv(1, 0x03, b"abcd"),  # a command set that is no DIMSE message
    ],
    ids=["unknown context", "garbage command"],
)
def test_p_data_pynetdicom_cannot_act_on_is_aborted(node: Any, p_data: bytes) -> None:
    # Was: the action raised in the DUL thread, which ended without a word to the peer.
    answer = raw.converse(
        node.settings.node.port, association(), False, 0, raw.pdu(raw.P_DATA_TF, p_data)
    )
    assert answer.pdu_types == (raw.A_ASSOCIATE_AC, raw.A_ABORT)
    # The node goes on serving: an association, released.
    release = raw.pdu(raw.A_RELEASE_RQ, b"\0\0\0\0")
    served = raw.converse(node.settings.node.port, association(), False, 0, release)
    assert served.pdu_types == (raw.A_ASSOCIATE_AC, raw.A_RELEASE_RP)


def test_element_with_an_unknown_vr_is_malformed() -> None:
    # Was: any two upper-case letters passed for a VR ("ZZ"), and the instance was stored.
    element = b"\x08\x00\x16\x00ZZ\x02\x001\x00"
    uids = b"".join(
        struct.pack("<HH", 0x0020, element_number) + b"UI\x06\x001.2.3\x00"
        for element_number in (0x000D, 0x000E)
    )
    with pytest.raises(InvalidInstanceError, match=r"no valid VR \(b'ZZ'\)"):
        read_identifiers(element + uids, raw.EXPLICIT_LE)
    assert read_identifiers(element.replace(b"ZZ", b"UI") + uids, raw.EXPLICIT_LE)


@pytest.mark.peer
def test_data_set_cut_off_on_pynetdicoms_path_leaves_no_open_file(node: Any) -> None:
    # Was: a command set split over two PDV items goes to pynetdicom, which writes the data
    # set into a spool file as it arrives; when the peer left mid-data set, that file stayed
    # open (and on disk) until the cyclic garbage collector freed the dead association. The
    # fuzz test's descriptor check caught it now and then, 15 s after the fuzzing ended.
    command = raw.c_store_rq("1.2.826.0.1.3680043.8.498.42")
    split_command = raw.pdv(1, 0x01, command[:20]) + raw.pdv(1, 0x03, command[20:])
    first_fragment = raw.pdv(1, 0x00, b"\x08\x00\x16\x00UI\x1a\x00")
    incoming = node.spool.incoming_dir
    collecting = gc.isenabled()
    gc.disable()  # as in an idle node, where a collection may be minutes away
    try:
        raw.converse(
            node.settings.node.port,
            association(),
            True,  # the peer closes its side: the data set never completes
            0,
            raw.pdu(raw.P_DATA_TF, split_command + first_fragment),
        )
        wait_for(
            lambda: not _open_incoming_files(incoming), "the cut-off data set's file to close", 5
        )
        assert not node.spool.files_being_received()
    finally:
        if collecting:
            gc.enable()


def _open_incoming_files(incoming: Path) -> list[str]:
    """This process's descriptors open on files being received (the node runs in-process)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(incoming)):
                found.append(target)
    return found
