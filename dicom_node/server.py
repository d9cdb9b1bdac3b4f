"""The DICOM listener: a pynetdicom AE with our policy, audit trail and C-STORE service."""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine

from dicom_node import status
from dicom_node.direct_store import StoreFunction
from dicom_node.dispatch import ConnectionDispatcher, ConnectionReceiver, LoadBoard
from dicom_node.policy import AssociationPolicy
from dicom_node.pynetdicom_tuning import (
    EventDrivenRequestHandler,
    check_version,
    close_sockets_that_fail_to_connect,
    received_file_failure,
)
from dicom_node.receiver import AssociationTally, StoreService
from dicom_node.spool import Spool
from dicom_node.tls import accept_handshake, server_context
from store import ingest
from store.records import AssociationRequest
from vlnode.settings import Settings

log = logging.getLogger(__name__)

# Accept every storage SOP class, private ones included, in the transfer syntax the sender
# proposes first: instances are stored exactly as sent, never transcoded (pynetdicom's
# documented switch for a storage SCP).
_config.UNRESTRICTED_STORAGE_SERVICE = True
# Write each received data set to a file fragment by fragment as it arrives (pynetdicom's
# documented switch); the file is created in the spool (dicom_node.incoming) and renamed into
# place, never copied.
_config.STORE_RECV_CHUNKED_DATASET = True
# Patient identifiers never reach our logs: pynetdicom would log them per request.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False


@dataclass(frozen=True)
class ListenerRole:
    """Where a listener's connections come from when the node runs several listener processes.

    The main process accepts and hands each connection out (``dispatcher``); an extra process
    takes them from ``channel``. Each counts its open connections on the shared ``board``.
    """

    board: LoadBoard
    index: int
    dispatcher: ConnectionDispatcher | None = None
    channel: socket.socket | None = None


class TunedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the socket options a busy receiver needs.

    * ``TCP_NODELAY`` on every accepted socket: without it a small PDU (a C-STORE response)
      can wait on Nagle's algorithm and the sender's delayed ACK, whatever the peer sets.
    * With several listener processes (dicom_node.dispatch) the main process's server hands
      each accepted connection to the least busy process, and an extra process's server has
      no listening socket of its own: it serves the connections it is given.
    * With a TLS context (the TLS port) the handshake runs in the thread that serves the
      connection, in the process that serves it (dicom_node.tls), never where it is accepted.
    """

    role: ListenerRole | None = None
    tls_context: ssl.SSLContext | None = None
    handshake_timeout: float = 10.0

    @classmethod
    def for_role(
        cls,
        role: ListenerRole | None,
        tls_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> type[TunedAssociationServer]:
        attributes = {
            "role": role,
            "tls_context": tls_context,
            "handshake_timeout": handshake_timeout,
        }
        return type(cls.__name__, (cls,), attributes)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def accepts(self) -> bool:
        return self.role is None or self.role.channel is None

    def server_bind(self) -> None:
        if self.accepts:
            super().server_bind()

    def server_activate(self) -> None:
        if self.accepts:
            super().server_activate()

    def shutdown(self) -> None:
        # Built with ``AE.make_server`` rather than ``start_server``, so the AE does not list
        # it: stop serving and close the socket, leaving active associations to finish.
        if self.accepts:
            socketserver.BaseServer.shutdown(self)
        self.server_close()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        dispatcher = self.role.dispatcher if self.role is not None else None
        if dispatcher is None:
            super().process_request(request, client_address)
            return
        dispatcher.dispatch(
            request,
            lambda: super(TunedAssociationServer, self).process_request(request, client_address),
        )

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread (ThreadingMixIn), after any hand-over.
        if self.tls_context is not None:
            request = accept_handshake(self.tls_context, request, self.handshake_timeout)
            if request is None:
                self.connection_closed()  # no association, so no EVT_CONN_CLOSE to count it
                return
        super().finish_request(request, client_address)

    def serve_connection(self, connection: socket.socket) -> None:
        """Serve a connection accepted by the main process (extra listener processes)."""
        try:
            address = connection.getpeername()
        except OSError:  # the peer went away meanwhile
            connection.close()
            self.connection_closed()
            return
        self.process_request(connection, address)

    def connection_closed(self) -> None:
        if self.role is not None:
            self.role.board.add(self.role.index, -1)


class Listener:
    """Owns the AE, its server thread and the per-association bookkeeping."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        spool: Spool,
        role: ListenerRole | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self._receiver: ConnectionReceiver | None = None
        self.engine = engine
        self.policy = AssociationPolicy(settings.node)
        self.service = StoreService(spool, engine)
        self._tallies: dict[int, AssociationTally] = {}
        self._lock = threading.Lock()
        self.ae = self._make_ae()
        # The plain port's server and the TLS port's, as configured (node.tls).
        self.servers: list[TunedAssociationServer] = []

    def _make_ae(self) -> AE:
        check_version()
        close_sockets_that_fail_to_connect()
        # pynetdicom's own event handlers describe every PDU and DIMSE message for its debug
        # log, building the text whether or not it is logged: a third of the receive path's
        # Python time. Bound only when our log level is DEBUG, where that text is wanted.
        _config.LOG_HANDLER_LEVEL = "standard" if self.settings.logging.level == "DEBUG" else "none"
        node = self.settings.node
        ae = AE(ae_title=node.ae_title)
        # Our policy decides in EVT_REQUESTED (so every decision is audited); pynetdicom's own
        # checks are opened wide so they never pre-empt it.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        ae.maximum_associations = 10_000
        ae.maximum_pdu_size = node.max_pdu
        ae.network_timeout = node.network_timeout
        ae.acse_timeout = 30
        ae.dimse_timeout = node.network_timeout
        ae.add_supported_context(Verification)
        return ae

    @property
    def server(self) -> TunedAssociationServer | None:
        """The first server: the plain port's, or the TLS port's when it is the only one."""
        return self.servers[0] if self.servers else None

    def start(self) -> None:
        node = self.settings.node
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        if self.role is not None:
            handlers.append((evt.EVT_CONN_CLOSE, self._on_connection_closed))
        tls = node.tls
        ports: list[tuple[int, ssl.SSLContext | None]] = []
        if tls.plain_port:
            ports.append((node.port, None))
        if tls.port is not None:
            assert tls.certificate is not None and tls.private_key is not None  # settings check
            secure = server_context(
                tls.certificate, tls.private_key, tls.ca_file, tls.require_client_certificate
            )
            ports.append((tls.port, secure))
        for port, context in ports:
            server = self.ae.make_server(
                (node.bind_address, port),
                evt_handlers=handlers,
                server_class=TunedAssociationServer.for_role(
                    self.role, context, tls.handshake_timeout
                ),
                request_handler=EventDrivenRequestHandler.for_spool(
                    self.service.spool, self._store_function
                ),
            )
            assert isinstance(server, TunedAssociationServer)
            self.servers.append(server)
            if server.accepts:
                name = "dicom-tls-listener" if context is not None else "dicom-listener"
                threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        if self.role is not None and self.role.channel is not None:
            self._receiver = ConnectionReceiver(self.role.channel, self._serve_handed_connection)
            self._receiver.start()
        log.info(
            "listening as %s on %s; spool %s",
            node.ae_title,
            " and ".join(
                f"{node.bind_address}:{port} ({'TLS' if context is not None else 'plain'})"
                for port, context in ports
            ),
            "sealed (one disk flush per instance, shared by concurrent stores)"
            if self.service.spool.sealed
            else "portable (fdatasync per instance, folder fsync shared by concurrent stores)",
        )

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop accepting, let in-flight associations finish (up to the grace time)."""
        if self._receiver is not None:
            self._receiver.stop()
        for server in self.servers:
            server.shutdown()
        self.servers = []
        deadline = time.monotonic() + grace_seconds
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = self.active_associations()
        if leftover:
            log.warning(
                "aborting %d association(s) still active after %.0f s", leftover, grace_seconds
            )
        self.ae.shutdown()
        self.service.close()

    def _serve_handed_connection(self, connection: socket.socket) -> None:
        """Extra listener process: serve a connection by the server of the port it came to."""
        try:
            port = int(connection.getsockname()[1])
        except OSError:
            port = -1  # gone already: any server closes it
        server = next((s for s in self.servers if s.port == port), self.servers[0])
        server.serve_connection(connection)

    def active_associations(self) -> int:
        """Established associations of this process.

        A connection still negotiating is not counted: one its peer closed before sending an
        A-ASSOCIATE-RQ lingers until the ACSE timeout, and would hold up a graceful stop.
        """
        return sum(1 for a in self.ae.active_associations if a.is_acceptor and a.is_established)

    def _other_associations(self) -> int:
        """Associations of the whole node besides the one being negotiated.

        With several listener processes, the shared board's open connections (this one is
        counted there already); in one process, its established associations.
        """
        if self.role is not None:
            return max(0, self.role.board.total() - 1)
        return self.active_associations()

    # -- event handlers ---------------------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        host, port = str(assoc.requestor.address), int(assoc.requestor.port)
        rejection = self.policy.decide(calling, called, host, self._other_associations())
        try:
            association_id = ingest.open_association(
                self.engine,
                AssociationRequest(
                    calling_ae_title=calling,
                    called_ae_title=called,
                    peer_host=host,
                    peer_port=port,
                    accepted=rejection is None,
                    reason=rejection.reason if rejection else None,
                ),
            )
        except Exception:
            log.exception("cannot write the association audit row; refusing %s", calling)
            self._reject(assoc, 0x02, 0x02, 0x01)  # transient, ACSE, no reason given
            return
        if rejection is not None:
            log.warning("rejected association from %s@%s: %s", calling, host, rejection.reason)
            self._reject(assoc, rejection.result, rejection.source, rejection.diagnostic)
            return
        with self._lock:
            self._tallies[id(assoc)] = AssociationTally(association_id, calling)
        log.info("association %d from %s@%s:%d", association_id, calling, host, port)

    @staticmethod
    def _reject(assoc: Any, result: int, source: int, diagnostic: int) -> None:
        # As pynetdicom's own ACSE does: queue the A-ASSOCIATE-RJ, then wait (kill) until the
        # DUL has sent it and the peer closed, before the server closes the socket.
        assoc.acse.send_reject(result, source, diagnostic)
        assoc.kill()

    def _on_rejected(self, event: Any) -> None:
        tally = self._pop_tally(event.assoc)
        if tally is not None and tally.association_id is not None:
            ingest.close_association(
                self.engine,
                tally.association_id,
                stored=0,
                duplicate=0,
                failed=0,
                reason="rejected during negotiation",
            )

    def _on_ended(self, event: Any) -> None:
        tally = self._pop_tally(event.assoc)
        if tally is None or tally.association_id is None:
            return
        try:
            ingest.close_association(
                self.engine,
                tally.association_id,
                stored=tally.stored,
                duplicate=tally.duplicate,
                failed=tally.failed,
                reason="aborted" if event.event is evt.EVT_ABORTED else None,
            )
        except Exception:
            log.exception("cannot close the audit row of association %d", tally.association_id)
        log.info(
            "association %d ended: %d stored, %d duplicate, %d failed",
            tally.association_id,
            tally.stored,
            tally.duplicate,
            tally.failed,
        )

    def _on_connection_closed(self, _event: Any) -> None:
        if self.server is not None:
            self.server.connection_closed()

    def _on_echo(self, event: Any) -> int:
        return status.SUCCESS

    def _on_store(self, event: Any) -> Any:
        request = event.request
        return self._store_function(event.assoc)(
            event.dataset_path,
            str(event.context.transfer_syntax),
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            received_file_failure(request),
        )

    def _store_function(self, assoc: Any) -> StoreFunction:
        """How one association's data sets are stored: by the direct store on the network
        thread, and by ``_on_store`` when pynetdicom serves the request."""
        tally = self._tally(assoc)

        def store(
            received: Path,
            transfer_syntax: str,
            sop_class_uid: str,
            sop_instance_uid: str,
            write_failure: OSError | None,
            dataset: memoryview | None = None,
        ) -> int | Dataset:
            return self.service.store(
                received,
                transfer_syntax,
                sop_class_uid,
                sop_instance_uid,
                tally,
                write_failure=write_failure,
                dataset=dataset,
            )

        return store

    def _tally(self, assoc: Any) -> AssociationTally:
        with self._lock:
            tally = self._tallies.get(id(assoc))
            if tally is None:  # should not happen: EVT_REQUESTED always runs first
                tally = self._tallies[id(assoc)] = AssociationTally(None, "")
            return tally

    def _pop_tally(self, assoc: Any) -> AssociationTally | None:
        with self._lock:
            return self._tallies.pop(id(assoc), None)
