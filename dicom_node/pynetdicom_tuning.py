"""The one place vlnode reaches into pynetdicom's internals, pinned to one version.

pynetdicom runs two polling loops per association, and each C-STORE waits on both:

* the DUL thread (network side) sleeps 1 ms whenever it finds nothing to do, so a response
  our handler has queued, or the next request's bytes, wait up to a millisecond;
* the association reactor asks for a decoded message with ``get_msg(block=False)`` after its
  own 1 ms sleep.

Profiling a 300-instance series put about 30% of the receiving thread's time in such sleeps.
For every association our server accepts, before its threads start, we:

1. run the DUL with :func:`_event_driven_dul_loop`: pynetdicom's own steps in pynetdicom's own
   order, but where it would sleep it waits in ``select`` on the socket and on a pipe that is
   written whenever a primitive is queued for sending, so it wakes the moment there is work;
2. give the DIMSE provider a ``get_msg`` that, asked not to block, waits on the message
   queue, so a message is served the moment it is complete; the DUL's queue of indications
   for the user (release and abort from the peer) and the DUL thread's end put a wake-up on
   that queue, so the reactor thread sleeps until there is something to do instead of
   taking a turn at the GIL every few milliseconds;
3. read each PDU from the socket with ``recv_into`` into one buffer of the PDU's size, instead
   of ``recv`` calls of at most 4 KB each appended to a growing bytearray (a 128 KB PDU took
   32 calls and as many copies);
4. write the C-STORE response's command set and the stored file's File Meta Information with
   the byte-level encoders of dicom_node.encoding instead of building pydicom data sets
   (about 40% of the receive path's Python time); the response takes this path only when no
   handler is bound to EVT_DIMSE_SENT and carries no error comment or offending element,
   else pynetdicom's own ``send_msg`` runs;
5. have the chunked C-STORE reception (``_config.STORE_RECV_CHUNKED_DATASET``) write into the
   node's spool (:class:`dicom_node.incoming.IncomingFile`) instead of a temporary file in the
   system's temporary folder: pynetdicom creates it with ``NamedTemporaryFile`` in its DIMSE
   message module, which we point at a factory that asks the DUL thread's spool, and falls
   back to the real ``NamedTemporaryFile`` for associations this server did not accept (the
   same holds for the File Meta Information functions of that module); a data set still
   arriving when the association ends is discarded as the DUL thread ends, not left open
   until the garbage collector frees the association;
6. read PDUs in the DUL thread ourselves (:func:`_read_pdu`, pynetdicom's
   ``_read_pdu_data`` step for step) and, once the association is established, give each
   P-DATA-TF PDU first to :class:`dicom_node.direct_store.DirectStore`, which serves C-STORE
   requests right there (decode, write, store, respond) and returns the PDV items it did not
   take; those reach pynetdicom as a P-DATA-TF PDU of their own and are served as before
   (C-ECHO, anything unusual). While a data set is arriving, its next PDU is read at once,
   without the loop's readiness checks (the socket's receive timeout is the node's network
   timeout, so a stalled sender is still cut off). It is used only when no handler is bound
   to the events it would skip (data, PDU and DIMSE received or sent): at DEBUG level
   pynetdicom's own logging handlers are, and every message takes pynetdicom's path.

Against hostile or broken peers (tests/dicom_node/test_fuzz_listener.py), three departures
from pynetdicom's loop:

7. the events of a PDU already read are acted on before the next PDU is read (pynetdicom
   reads one PDU and acts on one event per turn, so a peer that sends an A-ASSOCIATE-RQ and
   garbage at once had the garbage's Evt19 wait behind a read that blocked on it);
8. every read of the socket gives up after the node's network timeout (``SO_RCVTIMEO``) in
   every state, not only once the direct store serves the association: a peer that stops
   inside a PDU header cannot hold the DUL thread, and the association, for ever;
9. a PDU longer than the node accepts (a P-DATA-TF over the maximum PDU length we announced,
   any other PDU over 1 MiB) is refused with an A-ABORT before its body is read, and a body
   is read into memory as it arrives rather than allocated whole from the declared length (a
   header claiming 4 GiB made the node allocate 4 GiB).

Timers are still checked by the DUL every 20 ms; release and abort wake both threads.

pynetdicom is pinned exactly (pyproject.toml); ``tests/dicom_node/test_pynetdicom_tuning.py``
fails loudly if a new version changes the code this mirrors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import dimse_messages, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import EVT_CONN_OPEN, EVT_DIMSE_SENT, trigger
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.direct_store import DirectStore, StoreFunction, p_data_tf
from dicom_node.encoding import FileMeta, c_store_response
from dicom_node.incoming import IncomingFile
from dicom_node.spool import Spool

PINNED_VERSION = "3.0.4"
# How long the DUL thread waits in select when it has nothing to do: a release, an abort or a
# timer wake nothing, and are noticed within this time.
_WAIT_SECONDS = 0.02
# How long the association's reactor thread waits for a message before it looks at release,
# abort and the idle timer again. Messages, release and abort requests from the peer, and the
# end of the DUL thread wake it at once (a ``_WAKE_REACTOR`` on its queue): with the direct
# store it has nothing to do while images arrive, and each wake-up costs a turn at the GIL.
_REACTOR_WAIT_SECONDS = 0.5
_WAKE_REACTOR = (None, None)  # what get_msg returns for "no message"

log = logging.getLogger(__name__)


class PynetdicomVersionError(RuntimeError):
    """pynetdicom is not the version this module was written against."""


def check_version() -> None:
    if pynetdicom.__version__ != PINNED_VERSION:
        raise PynetdicomVersionError(
            f"dicom_node.pynetdicom_tuning was written for pynetdicom {PINNED_VERSION}, "
            f"found {pynetdicom.__version__}: re-check it and update the pin"
        )


# Given an established association, the function that stores its C-STORE requests' data sets
# (the node's EVT_C_STORE handler, without the event).
StoreFunctionFactory = Callable[[Any], StoreFunction]


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the tuning applied before the threads start."""

    spool: Spool
    store_function: StoreFunctionFactory | None = None

    @classmethod
    def for_spool(
        cls, spool: Spool, store_function: StoreFunctionFactory | None = None
    ) -> type[EventDrivenRequestHandler]:
        """A handler class whose associations receive into ``spool``.

        With ``store_function``, C-STORE requests are served on the network thread
        (dicom_node.direct_store) when nothing else listens to the messages.
        """
        # A function stored on a class would be bound as a method: keep it static.
        function = staticmethod(store_function) if store_function is not None else None
        attributes = {"spool": spool, "store_function": function}
        return type(cls.__name__, (cls,), attributes)

    def handle(self) -> None:
        # pynetdicom's RequestHandler.handle, with make_event_driven() before start().
        assoc = self._create_association()
        make_event_driven(assoc, self.spool, self.store_function)
        trigger(assoc, EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()


def make_event_driven(
    assoc: Any, spool: Spool, store_function: StoreFunctionFactory | None = None
) -> None:
    """Tune a not yet started acceptor association (see the module's text)."""
    check_version()
    _receive_into_spool()
    _make_get_msg_wait(assoc.dimse)
    _make_store_responses_direct(assoc)
    dul = assoc.dul
    _make_reactor_wake_on_indications(dul, assoc.dimse)
    _make_recv_read_whole(dul.socket)
    _limit_blocking_reads(dul.socket.socket, assoc.network_timeout)
    waker = _Waker()
    dul.to_provider_queue = _NotifyingQueue(waker.wake)
    kill_dul = dul.kill_dul

    def kill_and_wake() -> None:
        kill_dul()
        waker.wake()

    dul.kill_dul = kill_and_wake
    # Thread.run is looked up on the instance: the DUL thread runs our loop.
    direct = _DirectPath(dul, spool, store_function)
    dul.run = lambda: _event_driven_dul_loop(dul, waker, spool, direct)
    # pynetdicom's own reads (negotiation, release, anything the direct store leaves) take
    # the same checked path, without the direct store.
    dul._read_pdu_data = lambda: _read_one_pdu(dul, None)


# The association and spool the current DUL thread receives for (set by the DUL loop).
_dul_thread = threading.local()
_pynetdicom_create_file_meta: Any = dimse_messages.create_file_meta  # type: ignore[attr-defined]
_pynetdicom_write_file_meta_info: Any = dimse_messages.write_file_meta_info  # type: ignore[attr-defined]


def close_sockets_that_fail_to_connect() -> None:
    """Have pynetdicom close a socket whose connection failed (refused, timed out, TLS).

    Its ``AssociationSocket._shutdown_socket`` calls ``shutdown`` then ``close`` in one
    ``try``: on a socket that never connected ``shutdown`` raises, ``close`` is skipped, and
    the descriptor stays open until the garbage collector finds the socket (a sender that
    retries an unreachable destination held one descriptor per failed try, and the tests saw
    the ResourceWarning in whichever test ran when it was collected). Idempotent.
    """
    AssociationSocket._shutdown_socket = _shutdown_and_close  # type: ignore[method-assign]


def _shutdown_and_close(self: AssociationSocket) -> None:
    sock = self.socket
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _receive_into_spool() -> None:
    dimse_messages.NamedTemporaryFile = _spool_or_system_temporary_file  # type: ignore[attr-defined]
    dimse_messages.create_file_meta = _create_file_meta  # type: ignore[attr-defined]
    dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[attr-defined]


def _spool_or_system_temporary_file(*args: Any, **kwargs: Any) -> Any:
    spool: Spool | None = getattr(_dul_thread, "spool", None)
    if spool is None:
        return tempfile.NamedTemporaryFile(*args, **kwargs)
    return spool.new_incoming_file()


def received_file_failure(request: Any) -> OSError | None:
    """The error that stopped writing a C-STORE request's data set to the spool, if any."""
    # The chunked reception keeps its file object on the request primitive.
    incoming = getattr(request, "_dataset_file", None)
    return incoming.failure if isinstance(incoming, IncomingFile) else None


def _create_file_meta(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, **kwargs: Any
) -> Any:
    assoc = getattr(_dul_thread, "assoc", None)
    if assoc is None or kwargs:
        return _pynetdicom_create_file_meta(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax=transfer_syntax,
            **kwargs,
        )
    return _file_meta(assoc, sop_class_uid, sop_instance_uid, transfer_syntax)


def _file_meta(assoc: Any, sop_class_uid: str, sop_instance_uid: str, syntax: str) -> FileMeta:
    """What pynetdicom's chunked reception writes as a received file's File Meta Information."""
    return FileMeta(
        sop_class_uid=str(sop_class_uid),
        sop_instance_uid=str(sop_instance_uid),
        transfer_syntax_uid=str(syntax),
        implementation_class_uid=str(assoc.acceptor.implementation_class_uid),
        implementation_version_name=str(assoc.acceptor.implementation_version_name or ""),
        source_ae_title=str(assoc.requestor.ae_title or "").strip(),
    )


def _write_file_meta_info(fp: Any, file_meta: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(file_meta, FileMeta):
        fp.write(file_meta.encode())
    else:
        _pynetdicom_write_file_meta_info(fp, file_meta, *args, **kwargs)


def _make_store_responses_direct(assoc: Any) -> None:
    dimse = assoc.dimse
    pynetdicom_send_msg = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        encoded = _store_response(primitive)
        too_long = encoded is not None and 0 < dimse.maximum_pdu_size < len(encoded) + 7
        if encoded is None or too_long or assoc.get_handlers(EVT_DIMSE_SENT):
            pynetdicom_send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        # Message control header 0x03: command set, last fragment (PS3.8 E.2).
        pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
        dimse.dul.send_pdu(pdata)

    dimse.send_msg = send_msg


def _store_response(primitive: Any) -> bytes | None:
    """The encoded command set of a plain C-STORE response, or None for anything else."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    status, sop_class, sop_instance = (
        primitive.Status,
        primitive.AffectedSOPClassUID,
        primitive.AffectedSOPInstanceUID,
    )
    if not isinstance(status, int) or not sop_class or not sop_instance:
        return None
    return c_store_response(
        primitive.MessageIDBeingRespondedTo, status, str(sop_class), str(sop_instance)
    )


def _make_get_msg_wait(dimse: Any) -> None:
    messages: queue.Queue[Any] = dimse.msg_queue
    blocking_get = dimse.get_msg

    def get_msg(block: bool = False) -> tuple[int | None, Any]:
        if block:
            while True:  # a wake-up is not the message a blocking caller waits for
                item = blocking_get(block=True)
                if item is not _WAKE_REACTOR:
                    return item  # type: ignore[no-any-return]
        try:
            return messages.get(timeout=_REACTOR_WAIT_SECONDS)  # type: ignore[no-any-return]
        except queue.Empty:
            return None, None

    dimse.get_msg = get_msg


def _make_reactor_wake_on_indications(dul: Any, dimse: Any) -> None:
    # The reactor thread acts on what the DUL queues for the user (a release or abort from the
    # peer) and on the DUL thread ending; both now put a wake-up on the queue it waits on.
    def wake_reactor() -> None:
        dimse.msg_queue.put(_WAKE_REACTOR)

    dul.to_user_queue = _NotifyingQueue(wake_reactor)


# Above this a PDU body is read in pieces, so memory follows the bytes that really arrive.
_WHOLE_READ_LIMIT = 8 * 2**20


def _make_recv_read_whole(association_socket: Any) -> None:
    def recv(nr_bytes: int) -> bytearray:
        # AssociationSocket.recv's contract: block until ``nr_bytes`` are read, or return the
        # shorter data when the peer closed; socket errors propagate to the DUL as before.
        buffer = bytearray(min(nr_bytes, _WHOLE_READ_LIMIT))
        received = 0
        while received < nr_bytes:
            if received == len(buffer):
                buffer.extend(bytes(min(nr_bytes - received, _WHOLE_READ_LIMIT)))
            with memoryview(buffer) as view:
                count = association_socket.socket.recv_into(view[received:])
            if not count:
                break
            received += count
        if received < len(buffer):
            del buffer[received:]
        return buffer

    association_socket.recv = recv


class _Waker:
    """A self-pipe: written when there is something to send, watched beside the socket."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        # Held while writing and closing: a late wake() must never write to a closed
        # descriptor number that the process has since given to another file.
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            # A full pipe already means "wake up".
            with contextlib.suppress(BlockingIOError):
                os.write(self.write_fd, b"\0")

    def wait(self, sock: Any, timeout: float) -> None:
        """Return when ``sock`` is readable, :meth:`wake` was called, or after ``timeout``."""
        watched = [self.read_fd]
        raw = getattr(sock, "socket", None) if sock is not None else None
        if raw is not None and raw.fileno() >= 0:
            if isinstance(raw, ssl.SSLSocket) and raw.pending():
                return  # TLS holds decrypted bytes select cannot see
            watched.append(raw)
        try:
            ready, _, _ = select.select(watched, [], [], timeout)
        except (OSError, ValueError):
            return  # the socket went away between the check and select: the DUL will see it
        if self.read_fd in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.read_fd, 4096):
                    pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.read_fd)
                os.close(self.write_fd)


class _NotifyingQueue(queue.Queue[Any]):
    """A queue that calls ``on_put`` after each put: the DUL's to-provider queue wakes the DUL
    (a primitive to send), its to-user queue wakes the association's reactor."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._on_put()


def _event_driven_dul_loop(dul: Any, waker: _Waker, spool: Spool, direct: _DirectPath) -> None:
    """``DULServiceProvider.run_reactor`` of pynetdicom 3.0.4, waiting instead of sleeping."""
    _dul_thread.spool = spool
    _dul_thread.assoc = dul.assoc
    dul._idle_timer.start()
    try:
        while True:
            if not dul.assoc._dul_ready.is_set():
                dul.assoc._dul_ready.set()
            if dul._kill_thread:
                break
            # The ARTIM timer's event goes on the queue ahead of any other of this turn.
            if dul.artim_timer.expired:
                dul.event_queue.put("Evt18")
            try:
                # One of: encode and send a queued primitive, or receive and decode a PDU; the
                # events of what was read before come first (the module's text, 7).
                if dul._process_recv_primitive() or not dul.event_queue.empty():
                    pass
                elif direct.wants_next_pdu() and dul.socket.ready:
                    _read_pdu(dul, direct)
                    dul._idle_timer.restart()
                elif dul._is_transport_event():
                    dul._idle_timer.restart()
            except Exception:
                log.exception("DUL error, aborting the association")
                _abort_without_state_machine(dul)
                return
            try:
                event = dul.event_queue.get(block=False)
            except queue.Empty:
                waker.wait(dul.socket, _WAIT_SECONDS)
                continue
            try:
                dul.state_machine.do_action(event)
            except InvalidEventError:
                if dul.state_machine.current_state == "Sta13":
                    # The association was aborted (a bad PDU from the peer) while its thread
                    # was answering the request: that answer has nowhere to go.
                    continue
                log.exception("DUL error, aborting the association")
                _abort_without_state_machine(dul)
                return
            except Exception:
                # An action failed on what the peer sent (a P-DATA-TF on a context that was
                # never accepted, a command set that is no DIMSE message): pynetdicom lets that
                # end the DUL thread without a word to the peer; the peer gets an A-ABORT.
                log.exception("cannot act on %s from the peer; aborting the association", event)
                _abort_without_state_machine(dul)
                return
    finally:
        direct.close()
        _discard_unfinished_message(dul)
        waker.close()
        dul.assoc.dimse.msg_queue.put(_WAKE_REACTOR)


def _discard_unfinished_message(dul: Any) -> None:
    """Drop the data set pynetdicom was receiving when the association ended.

    A message completes (and leaves ``dimse.message``) in this thread, so one still there is
    never served. Its spool file (an IncomingFile, the module's text, 5) would otherwise stay
    open, and on disk, until the garbage collector breaks the dead association's cycles.
    """
    message = getattr(dul.assoc.dimse, "message", None)
    incoming = getattr(message, "_data_set_file", None)
    if isinstance(incoming, IncomingFile):
        incoming.discard()


def _abort_without_state_machine(dul: Any) -> None:
    # As pynetdicom does here: the state machine may be inconsistent, so send the A-ABORT
    # directly and stop both reactors.
    abort = A_ABORT_RQ()
    abort.source = 0x02
    abort.reason_diagnostic = 0x00
    with contextlib.suppress(Exception):
        dul.socket.send(abort.encode())
    # After an A-ABORT the transport is done with (PS3.8 9.1.8); left open, the socket was
    # only closed by garbage collection, whenever that came (a ResourceWarning in tests).
    with contextlib.suppress(Exception):
        dul.socket.close()
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True


# Events a directly served C-STORE would not announce: with a handler bound to any of them,
# every message takes pynetdicom's path.
_EVENTS_DIRECT_STORE_SKIPS = (
    evt.EVT_DATA_RECV,
    evt.EVT_PDU_RECV,
    evt.EVT_DIMSE_RECV,
    evt.EVT_DATA_SENT,
    evt.EVT_PDU_SENT,
    evt.EVT_DIMSE_SENT,
)
_P_DATA_TF_TYPE = 0x04
_PDU_TYPES = range(0x01, 0x08)
# Negotiation, release and abort PDUs are small; an A-ASSOCIATE-RQ with 128 presentation
# contexts and a user identity is a few tens of KB.
_LARGEST_OTHER_PDU = 2**20


class _DirectPath:
    """When and how one association's P-DATA-TF PDUs go to dicom_node.direct_store."""

    def __init__(self, dul: Any, spool: Spool, store_function: StoreFunctionFactory | None) -> None:
        self.dul = dul
        self.spool = spool
        self.store_function = store_function
        self.store: DirectStore | None = None
        self._decided = store_function is None

    def wants_next_pdu(self) -> bool:
        """Read the next PDU with :func:`_read_pdu` (established association, direct store on)."""
        if self.dul.state_machine.current_state != "Sta6":
            return False
        if not self._decided:
            self._decided = True
            self.store = self._make_store()
        return self.store is not None

    def _make_store(self) -> DirectStore | None:
        assoc = self.dul.assoc
        if self.store_function is None or any(
            assoc.get_handlers(event) for event in _EVENTS_DIRECT_STORE_SKIPS
        ):
            return None
        return DirectStore(
            transfer_syntaxes={
                int(cx.context_id): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            },
            new_file=self.spool.new_incoming_file,
            file_meta=lambda sop_class, sop_instance, syntax: _file_meta(
                assoc, sop_class, sop_instance, syntax
            ).encode(),
            store=self.store_function(assoc),
            send=self.dul.socket.send,
            peer_max_pdu=int(assoc.requestor.maximum_length or 0),
        )

    def take(self, header: bytes, body: bytearray) -> bytes | None:
        """The PDU for pynetdicom after the direct store took what it serves (None: all)."""
        if self.store is None or header[0] != _P_DATA_TF_TYPE:
            return bytes(header) + body
        # A message pynetdicom has begun is pynetdicom's to finish.
        if self.dul.assoc.dimse.message is not None and not self.store.receiving:
            return bytes(header) + body
        with memoryview(body) as items:
            rest = self.store.take(items)
            return None if rest is None else p_data_tf(rest)

    @property
    def receiving(self) -> bool:
        return self.store is not None and self.store.receiving

    def close(self) -> None:
        if self.store is not None:
            self.store.discard()


def _limit_blocking_reads(raw: socket.socket, seconds: float | None) -> None:
    # Reads block (the rest of a PDU, the rest of a data set): one that waits longer than the
    # network timeout fails (EAGAIN), which ends the association as a closed connection would.
    if seconds and raw.gettimeout() is None:
        whole = int(seconds)
        raw.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_RCVTIMEO,
            struct.pack("ll", whole, int((seconds - whole) * 1_000_000)),
        )


def _read_pdu(dul: Any, direct: _DirectPath) -> None:
    """Read a PDU; while the direct store is in the middle of a data set, read on.

    The rest of a data set is sure to come next (PS3.8 Annex E), so it is read without going
    back through the loop's readiness checks; a peer that stalls meanwhile is cut off by the
    socket's receive timeout (the node's network timeout, set with the direct store).
    """
    while _read_one_pdu(dul, direct) and direct.receiving:
        pass


def _largest_pdu(dul: Any, pdu_type: int) -> int | None:
    """The longest PDU body of this type we read (None: no limit)."""
    if pdu_type != _P_DATA_TF_TYPE:
        return _LARGEST_OTHER_PDU
    announced = int(dul.assoc.acceptor.maximum_length or 0)
    return announced or None


def _read_one_pdu(dul: Any, direct: _DirectPath | None) -> bool:
    """``DULServiceProvider._read_pdu_data`` of pynetdicom 3.0.4, with the direct store first.

    The same reads, the same events for a closed connection (Evt17) and an unknown or
    undecodable PDU (Evt19), the same decoding for what reaches pynetdicom; and Evt19 for a
    PDU longer than we accept, before its body is read. True if the direct store (when
    given) took the whole PDU.
    """
    sock = dul.socket
    try:
        header = sock.recv(6)
    except (OSError, TimeoutError):
        log.error("connection closed before the entire PDU was received")
        dul.event_queue.put("Evt17")
        return False
    if len(header) != 6:
        dul.event_queue.put("Evt17")
        return False
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in _PDU_TYPES:
        log.error("unknown PDU type 0x%02X received", pdu_type)
        dul.event_queue.put("Evt19")
        return False
    largest = _largest_pdu(dul, pdu_type)
    if largest is not None and length > largest:
        log.error(
            "PDU of type 0x%02X declares %d bytes, more than the %d accepted",
            pdu_type,
            length,
            largest,
        )
        dul.event_queue.put("Evt19")
        return False
    try:
        body = sock.recv(length)
    except (OSError, TimeoutError):
        log.error("connection closed before the entire PDU was received")
        dul.event_queue.put("Evt17")
        return False
    if len(body) != length:
        log.error("the received PDU is shorter than expected (%d of %d bytes)", len(body), length)
        dul.event_queue.put("Evt17")
        return False
    pdu = direct.take(header, body) if direct is not None else bytes(header) + body
    if pdu is None:
        return True
    try:
        decoded, event = dul._decode_pdu(pdu)
        dul.event_queue.put(event)
    except Exception:
        log.exception("unable to decode the received PDU data")
        dul.event_queue.put("Evt19")
        return False
    dul._recv_pdu.put(decoded)
    return False
