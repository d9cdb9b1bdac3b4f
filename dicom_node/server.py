"""The DICOM listener: a pynetdicom AE with our policy, audit trail and C-STORE service."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine

from dicom_node import status
from dicom_node.policy import AssociationPolicy
from dicom_node.pynetdicom_tuning import (
    EventDrivenRequestHandler,
    check_version,
    received_file_failure,
)
from dicom_node.receiver import AssociationTally, StoreService
from dicom_node.spool import Spool
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


class TunedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the socket options a busy receiver needs.

    * ``SO_REUSEPORT`` lets several listener processes share one port (the kernel spreads
      connections), since one Python process is capped near one core by the GIL.
    * ``TCP_NODELAY`` on every accepted socket: without it a small PDU (a C-STORE response)
      can wait on Nagle's algorithm and the sender's delayed ACK, whatever the peer sets.
    """

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT") and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        # Built with ``AE.make_server`` rather than ``start_server``, so the AE does not list
        # it: stop serving and close the socket, leaving active associations to finish.
        socketserver.BaseServer.shutdown(self)
        self.server_close()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


class Listener:
    """Owns the AE, its server thread and the per-association bookkeeping."""

    def __init__(self, settings: Settings, engine: Engine, spool: Spool) -> None:
        self.settings = settings
        self.engine = engine
        self.policy = AssociationPolicy(settings.node)
        self.service = StoreService(spool, engine)
        self._tallies: dict[int, AssociationTally] = {}
        self._lock = threading.Lock()
        self.ae = self._make_ae()
        self.server: TunedAssociationServer | None = None

    def _make_ae(self) -> AE:
        check_version()
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
        server = self.ae.make_server(
            (node.bind_address, node.port),
            evt_handlers=handlers,
            server_class=TunedAssociationServer,
            request_handler=EventDrivenRequestHandler.for_spool(self.service.spool),
        )
        assert isinstance(server, TunedAssociationServer)
        thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        thread.start()
        self.server = server
        log.info(
            "listening as %s on %s:%d; spool %s",
            node.ae_title,
            node.bind_address,
            node.port,
            "sealed (one disk flush per instance)"
            if self.service.spool.sealed
            else "portable (fdatasync and folder fsync per instance)",
        )

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop accepting, let in-flight associations finish (up to the grace time)."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        deadline = time.monotonic() + grace_seconds
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = self.active_associations()
        if leftover:
            log.warning(
                "aborting %d association(s) still active after %.0f s", leftover, grace_seconds
            )
        self.ae.shutdown()

    def active_associations(self) -> int:
        return sum(1 for a in self.ae.active_associations if a.is_acceptor)

    # -- event handlers ---------------------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        host, port = str(assoc.requestor.address), int(assoc.requestor.port)
        rejection = self.policy.decide(calling, called, host, self.active_associations())
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

    def _on_echo(self, event: Any) -> int:
        return status.SUCCESS

    def _on_store(self, event: Any) -> Any:
        tally = self._tally(event.assoc)
        request = event.request
        return self.service.store(
            event.dataset_path,
            str(event.context.transfer_syntax),
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            tally,
            write_failure=received_file_failure(request),
        )

    def _tally(self, assoc: Any) -> AssociationTally:
        with self._lock:
            tally = self._tallies.get(id(assoc))
            if tally is None:  # should not happen: EVT_REQUESTED always runs first
                tally = self._tallies[id(assoc)] = AssociationTally(None, "")
            return tally

    def _pop_tally(self, assoc: Any) -> AssociationTally | None:
        with self._lock:
            return self._tallies.pop(id(assoc), None)
