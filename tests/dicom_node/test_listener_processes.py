"""Several listener processes on one port: each connection goes to the least busy process."""

from __future__ import annotations

import multiprocessing
import re
import socket
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicom_node.dispatch import ConnectionDispatcher, LoadBoard
from tests.conftest import NodeProcess
from tests.dicom_factory import write_ct_study


@pytest.mark.peer
def test_concurrent_associations_are_spread_over_processes(
    node_process: NodeProcess, tmp_path: Path
) -> None:
    node_process.env["VLNODE_NODE__LISTENER_PROCESSES"] = "3"
    node_process.start()
    time.sleep(3.0)  # the extra processes import their modules
    _, files = write_ct_study(tmp_path / "study", (3,))
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage)
    # Three associations open at once: the busy-count board sends each to a different process.
    associations = [ae.associate("127.0.0.1", node_process.port, ae_title="VLNODE") for _ in files]
    try:
        for assoc, path in zip(associations, files, strict=True):
            assert assoc.is_established
            assert assoc.send_c_store(dcmread(path)).Status == 0x0000
    finally:
        for assoc in associations:
            assoc.release()
    time.sleep(0.5)
    serving = set(
        re.findall(r"INFO (\S+) dicom_node\.server: association \d+ from", node_process.log())
    )
    assert len(serving) == 3, node_process.log()[-3000:]
    assert node_process.cli("status").returncode == 0
    assert (
        "3 instances" in node_process.cli("status").stdout
        or "3" in node_process.cli("status").stdout
    )
    assert node_process.stop() == 0


def test_dispatcher_serves_here_when_a_process_is_gone() -> None:
    board = LoadBoard(multiprocessing.get_context("spawn").Array("i", 2))
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    theirs.close()  # the extra process died
    dispatcher = ConnectionDispatcher(board, [None, ours])
    served_here: list[int] = []
    board.add(0, +1)  # the main process is busier: the extra one would be chosen
    left, right = socket.socketpair()
    dispatcher.dispatch(left, lambda: served_here.append(1))
    assert served_here == [1]
    assert dispatcher.alive == [True, False]
    assert list(board.counts) == [2, 0]
    for sock in (ours, left, right):
        sock.close()


@pytest.mark.peer
def test_association_limit_counts_every_listener_process(node_process: NodeProcess) -> None:
    node_process.env["VLNODE_NODE__LISTENER_PROCESSES"] = "2"
    node_process.env["VLNODE_NODE__MAX_ASSOCIATIONS"] = "1"
    node_process.start()
    time.sleep(3.0)  # the extra process imports its modules
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage)
    first = ae.associate("127.0.0.1", node_process.port, ae_title="VLNODE")
    try:
        assert first.is_established
        # The second connection goes to the other, idle process: the limit is the node's.
        second = ae.associate("127.0.0.1", node_process.port, ae_title="VLNODE")
        assert second.is_rejected
    finally:
        first.release()
        ae.shutdown()
    assert "1 associations already active (node.max_associations = 1)" in node_process.log()
    assert node_process.stop() == 0
