"""Fails loudly when a pynetdicom release changes what dicom_node.pynetdicom_tuning relies on."""

from __future__ import annotations

import gc
import hashlib
import inspect
import threading
import warnings

import pynetdicom
from pynetdicom import AE, dimse_messages
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.pynetdicom_tuning import (
    PINNED_VERSION,
    check_version,
    close_sockets_that_fail_to_connect,
)
from tests.conftest import free_port

# sha256 of pynetdicom 3.0.4's DULServiceProvider.run_reactor, which _event_driven_dul_loop
# mirrors step for step: if it changes, re-read it and update the mirror and this digest.
RUN_REACTOR_SHA256 = "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803"
# The same for DULServiceProvider._read_pdu_data, which _read_pdu mirrors.
READ_PDU_DATA_SHA256 = "19f2d4e38c13c83586365d93dd5cd96a0c7c665cb37251054b3e1f246e9f431b"


def test_pinned_version_is_installed() -> None:
    assert pynetdicom.__version__ == PINNED_VERSION
    check_version()


def test_dul_loop_is_the_one_we_mirror() -> None:
    source = inspect.getsource(DULServiceProvider.run_reactor)
    assert hashlib.sha256(source.encode()).hexdigest() == RUN_REACTOR_SHA256
    # Our loop is installed as the instance's ``run``: the class must not define its own.
    assert DULServiceProvider.run is threading.Thread.run
    for name in ("_process_recv_primitive", "_is_transport_event"):
        assert name in source
    # Primitives to send go through the queue we replace with one that wakes the loop.
    assert "self.to_provider_queue.put(" in inspect.getsource(DULServiceProvider.send_pdu)


def test_reactor_still_polls_get_msg_without_blocking() -> None:
    # The tuning replaces the non-blocking poll; if the reactor stops using it, or the
    # provider stops keeping messages in ``msg_queue``, the tuning silently does nothing.
    source = inspect.getsource(Association._run_reactor)
    assert "self.dimse.get_msg(block=False)" in source
    assert "msg_queue" in inspect.getsource(DIMSEServiceProvider.get_msg)
    assert "self.msg_queue" in inspect.getsource(DIMSEServiceProvider.__init__)


def test_chunked_reception_still_uses_the_factory_we_replace() -> None:
    # decode_msg creates the file with the module's NamedTemporaryFile, writes each fragment
    # and flushes through ``.file``; the storage SCP removes it by name after the handler.
    decode = inspect.getsource(dimse_messages.DIMSEMessage.decode_msg)
    assert "NamedTemporaryFile(delete=False" in decode
    assert "self._data_set_file.file.flush()" in decode
    scp = inspect.getsource(StorageServiceClass.SCP)
    assert "os.unlink(req._dataset_file.name)" in scp
    # The file object stays reachable from the request primitive (received_file_failure).
    to_primitive = inspect.getsource(dimse_messages.DIMSEMessage.message_to_primitive)
    assert "primitive._dataset_file = self._data_set_file" in to_primitive
    # The File Meta Information goes through the two module functions we replace.
    assert "write_file_meta_info(" in decode and "create_file_meta(" in decode
    for keyword in ("sop_class_uid=", "sop_instance_uid=", "transfer_syntax="):
        assert keyword in decode


def test_send_msg_does_what_the_direct_store_response_repeats() -> None:
    # Convert, announce EVT_DIMSE_SENT (we only skip it when no handler is bound), then hand
    # each P-DATA to the DUL.
    source = inspect.getsource(DIMSEServiceProvider.send_msg)
    assert "evt.EVT_DIMSE_SENT" in source
    assert "self.dul.send_pdu(pdata)" in source
    assert "self.maximum_pdu_size" in source


def test_pdus_are_read_through_the_socket_recv_we_replace() -> None:
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    assert "self.socket.recv(6)" in source
    assert "self.socket.recv(pdu_length)" in source


def test_pdu_reading_is_the_one_we_mirror() -> None:
    # _read_pdu repeats _read_pdu_data's reads and events, and hands pynetdicom what the direct
    # store leaves through the same two steps: decode, then queue the PDU.
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    assert hashlib.sha256(source.encode()).hexdigest() == READ_PDU_DATA_SHA256
    assert "pdu, event = self._decode_pdu(bytestream)" in source
    assert "self._recv_pdu.put(pdu)" in source
    # The direct store is offered a PDU only while no DIMSE message is half decoded.
    receive = inspect.getsource(DIMSEServiceProvider.receive_primitive)
    assert "if self.message is None:" in receive and "self.message = None" in receive


def test_request_handler_steps_are_the_ones_we_repeat() -> None:
    source = inspect.getsource(RequestHandler.handle)
    assert "self._create_association()" in source
    assert "evt.EVT_CONN_OPEN" in source
    assert "assoc.start()" in source


def test_a_refused_connection_leaves_no_socket_open() -> None:
    # pynetdicom's own failure path calls the method we replace.
    assert "self._shutdown_socket()" in inspect.getsource(AssociationSocket.connect)
    close_sockets_that_fail_to_connect()
    closed_port = free_port()  # nothing listens there
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    ae.connection_timeout = 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assoc = ae.associate("127.0.0.1", closed_port)
        assert not assoc.is_established
        del assoc
        gc.collect()
    ae.shutdown()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
