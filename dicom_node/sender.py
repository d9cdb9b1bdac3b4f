"""The sender: delivers the node's outputs (SR, SEG) to the destinations by C-STORE.

A loop claims one due delivery at a time (store.outputs), sends its file over a new
association and records the outcome. Failures are sorted by what would fix them:

* transient (the destination is down, busy, slow, or out of resources: connection refused,
  timeouts, aborts, A-ASSOCIATE-RJ "rejected-transient", C-STORE 0xA7xx): tried again later,
  the waits doubling from ``delivery.first_retry_seconds`` up to ``delivery.max_retry_seconds``
  with jitter; after ``delivery.max_attempts`` tries the delivery is dead;
* permanent (the configuration is wrong: A-ASSOCIATE-RJ "rejected-permanent", a refused
  presentation context, a C-STORE failure status, a destination no longer configured, an
  unreadable file): dead at once, with an error saying what to change.

Warning statuses (0xB000, 0xB006, 0xB007) mean the destination stored the object: delivered.
Dead deliveries wait for ``vlnode deliveries --resend``. Logs name SOP Instance UIDs only,
never patient data.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, build_context, evt
from sqlalchemy import Engine

from dicom_node.pynetdicom_tuning import close_sockets_that_fail_to_connect
from dicom_node.tls import client_context
from store.audit import record_delivery_try
from store.outputs import (
    DueDelivery,
    claim_due_delivery,
    delivery_failed,
    delivery_succeeded,
)
from store.tables import utcnow
from vlnode.metrics import observe_delivery_try
from vlnode.settings import Destination, Settings

log = logging.getLogger(__name__)

# C-STORE statuses the sender tells apart (PS3.4 Table B.2-1, PS3.7 C.4).
SUCCESS = 0x0000
WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
STORED_WITH_WARNING = (
    WARNING_COERCION_OF_DATA_ELEMENTS,
    WARNING_ELEMENTS_DISCARDED,
    WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS,
)
# 0xA7xx: "Refused: Out of Resources"; the destination may have room later.
OUT_OF_RESOURCES_MASK = 0xFF00
OUT_OF_RESOURCES = 0xA700

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, and the reasons of source 1 (service user) worth a hint.
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
REASON_CALLING_AE_NOT_RECOGNISED = 0x03
REASON_CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass(frozen=True)
class SendResult:
    """What one try came to: delivered, or an error that is transient or permanent."""

    delivered: bool
    error: str | None = None
    transient: bool = False


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` tries: doubling, capped, with jitter.

    The jitter (50 to 100 % of the wait) keeps senders whose destination came back from
    all trying at the same moment.
    """
    delivery = settings.delivery
    wait = min(
        delivery.max_retry_seconds, delivery.first_retry_seconds * 2.0 ** max(0, attempts - 1)
    )
    return wait * random.uniform(0.5, 1.0)


class Sender:
    """Delivers due outputs until stopped; ``run_once`` handles at most one delivery."""

    def __init__(self, settings: Settings, engine: Engine, name: str) -> None:
        self.settings = settings
        self.engine = engine
        self.name = name
        self._destinations = {d.name: d for d in settings.destinations}
        # DICOM TLS contexts, made once (the settings checked their files at start-up).
        self._tls = {
            d.name: client_context(
                d.tls.ca_file, d.tls.certificate, d.tls.private_key, d.tls.check_hostname
            )
            for d in settings.destinations
            if d.tls is not None
        }
        # A try takes at most a few timeouts (connect, associate, the response); a sender
        # that died mid-send loses its claim after this and another sender takes it.
        self.lease_seconds = 4 * settings.delivery.timeout_seconds + 60
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the loop in a daemon thread, polling every ``delivery.poll_interval_seconds``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sender-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the delivery in hand."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:  # the database went away: try again later, never die
                log.exception("sender %s: cannot claim or record a delivery; retrying", self.name)
                handled = False
            if not handled:
                self._stop.wait(self.settings.delivery.poll_interval_seconds)

    def run_once(self) -> bool:
        """Claim one due delivery, send it and record the outcome; False when none was due."""
        due = claim_due_delivery(self.engine, self.name, self.lease_seconds)
        if due is None:
            return False
        result = self.send(due)
        if result.delivered:
            delivery_succeeded(self.engine, due.delivery_id)
            self._audit(due, "delivered", None)
            log.info(
                "delivery %d: %s stored at %s",
                due.delivery_id,
                due.sop_instance_uid,
                due.destination,
            )
            return True
        error = result.error or "unknown error"
        if result.transient and due.attempts < self.settings.delivery.max_attempts:
            retry_at = utcnow() + dt.timedelta(seconds=retry_delay(self.settings, due.attempts))
            delivery_failed(
                self.engine, due.delivery_id, error, retry_at=retry_at, **self._held(due)
            )
            self._audit(due, "retry", error)
            log.warning(
                "delivery %d: %s to %s failed (try %d of %d), again at %s: %s",
                due.delivery_id,
                due.sop_instance_uid,
                due.destination,
                due.attempts,
                self.settings.delivery.max_attempts,
                retry_at.strftime("%H:%M:%S"),
                error,
            )
            return True
        if result.transient:
            error = (
                f"{error}; gave up after {due.attempts} tries. Once the destination is back, "
                f"`vlnode deliveries --resend {due.delivery_id}` sends it again"
            )
        delivery_failed(self.engine, due.delivery_id, error, retry_at=None, **self._held(due))
        self._audit(due, "dead", error)
        log.error(
            "delivery %d: %s to %s is dead: %s",
            due.delivery_id,
            due.sop_instance_uid,
            due.destination,
            error,
        )
        return True

    def _held(self, due: DueDelivery) -> dict[str, Any]:
        """Which try a failure belongs to: another sender may have taken the delivery up
        since, if this one's lease expired while it tried."""
        return {"sender": self.name, "attempt": due.attempts}

    def _audit(self, due: DueDelivery, outcome: str, error: str | None) -> None:
        """The try in the audit trail (with the peer as configured now) and in the metrics."""
        observe_delivery_try(outcome)
        destination = self._destinations.get(due.destination)
        peer = (destination.ae_title, destination.host, destination.port) if destination else None
        try:
            record_delivery_try(self.engine, due.delivery_id, due.destination, peer, outcome, error)
        except Exception:  # the outcome is recorded; a missing audit row must not resend it
            log.exception("delivery %d: cannot write its audit row", due.delivery_id)

    def send(self, due: DueDelivery) -> SendResult:
        """One try at sending a delivery's file; never raises."""
        destination = self._destinations.get(due.destination)
        if destination is None:
            return SendResult(
                False,
                f"destination {due.destination!r} is no longer configured; add it back to "
                "destinations, or leave this delivery dead",
            )
        path = self.settings.store.data_dir / due.file_path
        try:
            dataset = pydicom.dcmread(path)
            transfer_syntax = UID(dataset.file_meta.TransferSyntaxUID)
            sop_class = UID(dataset.SOPClassUID)
        except (OSError, InvalidDicomError, AttributeError) as exc:
            return SendResult(
                False,
                f"cannot read output {due.sop_instance_uid} at {path}: {exc}; the job that "
                "wrote it must run again",
            )
        try:
            return _store(
                self.settings,
                destination,
                dataset,
                sop_class,
                transfer_syntax,
                self._tls.get(destination.name),
            )
        except Exception as exc:  # pynetdicom raised: a try that failed, bounded by attempts
            log.exception("delivery %d: unexpected error while sending", due.delivery_id)
            return SendResult(
                False,
                f"unexpected error sending to {_peer(destination)}: {type(exc).__name__}: {exc}",
                transient=True,
            )


def _peer(destination: Destination) -> str:
    return f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"


def _store(
    settings: Settings,
    destination: Destination,
    dataset: pydicom.Dataset,
    sop_class: UID,
    transfer_syntax: UID,
    tls_context: ssl.SSLContext | None = None,
) -> SendResult:
    peer = f"destination {_peer(destination)}"
    timeout = settings.delivery.timeout_seconds
    close_sockets_that_fail_to_connect()  # else a refused try leaves its socket open
    ae = AE(ae_title=settings.node.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    connected = threading.Event()

    def on_connected(event: Any) -> None:
        connected.set()
        raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if raw is not None:  # one C-STORE request: no reason to wait on Nagle's algorithm
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    tls_args = None
    if tls_context is not None and destination.tls is not None:
        tls_args = (tls_context, destination.tls.server_name or destination.host)
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            contexts=[build_context(sop_class, [transfer_syntax])],
            ae_title=destination.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_connected)],
            tls_args=tls_args,
        )
        if assoc.is_rejected:
            return _rejection(assoc.acceptor.primitive, peer, settings)
        if not assoc.is_established:
            if assoc.rejected_contexts:
                return SendResult(
                    False,
                    f"{peer} refused the presentation context: {sop_class.name} in "
                    f"{transfer_syntax.name}; configure the destination to accept this SOP "
                    "class, or change destinations.transfer_syntaxes / sr_format / seg_format",
                )
            if not connected.is_set() and tls_args is not None:
                return SendResult(
                    False,
                    f"cannot connect to {peer} over TLS (refused, unreachable, no answer "
                    f"within {timeout:g} s, or the TLS handshake failed: pynetdicom's log says "
                    "which); check destinations.host / port and destinations.tls (its "
                    "ca_file must sign the destination's certificate, which must name "
                    "the host or tls.server_name)",
                    transient=True,
                )
            if not connected.is_set():
                return SendResult(
                    False,
                    f"cannot connect to {peer} (refused, unreachable or no answer within "
                    f"{timeout:g} s); check that it runs and destinations.host / port",
                    transient=True,
                )
            return SendResult(
                False,
                f"{peer} accepted the connection but gave no association within {timeout:g} s "
                "or aborted it",
                transient=True,
            )
        try:
            status = assoc.send_c_store(dataset)
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        ae.shutdown()
    if not status or "Status" not in status:
        return SendResult(
            False,
            f"{peer} sent no C-STORE response within {timeout:g} s, or aborted the association",
            transient=True,
        )
    code = int(status.Status)
    comment = f" ({status.ErrorComment})" if "ErrorComment" in status else ""
    if code == SUCCESS:
        return SendResult(True)
    if code in STORED_WITH_WARNING:
        log.warning(
            "%s stored %s with warning 0x%04X%s", peer, dataset.SOPInstanceUID, code, comment
        )
        return SendResult(True)
    if code & OUT_OF_RESOURCES_MASK == OUT_OF_RESOURCES:
        return SendResult(
            False, f"{peer} is out of resources (C-STORE status 0x{code:04X}){comment}", True
        )
    return SendResult(
        False,
        f"{peer} refused to store the object: C-STORE status 0x{code:04X}{comment}; the "
        "destination's log says why (SOP class, size, or a conflict with an existing object)",
    )


def _rejection(primitive: Any, peer: str, settings: Settings) -> SendResult:
    """A-ASSOCIATE-RJ: permanent unless the destination said 'rejected-transient'."""
    if primitive is None:
        return SendResult(False, f"{peer} rejected the association", transient=True)
    result, source, reason = primitive.result, primitive.result_source, primitive.diagnostic
    try:
        why = str(primitive.reason_str)
        why = why[:1].lower() + why[1:]
    except (KeyError, TypeError):  # a reason outside PS3.8's table
        why = f"source {source}, reason {reason}"
    hint = ""
    if source == SOURCE_SERVICE_USER and reason == REASON_CALLED_AE_NOT_RECOGNISED:
        hint = "; check destinations.ae_title"
    elif source == SOURCE_SERVICE_USER and reason == REASON_CALLING_AE_NOT_RECOGNISED:
        hint = (
            f"; the destination must accept our calling AE title {settings.node.ae_title} "
            "(node.ae_title)"
        )
    if result == REJECTED_TRANSIENT:
        return SendResult(False, f"{peer} rejected the association for now: {why}", True)
    return SendResult(False, f"{peer} rejected the association permanently: {why}{hint}")
