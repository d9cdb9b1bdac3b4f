"""The monitoring endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the process runs (a liveness probe: restart it if not).
``/readyz`` answers 200 when this process can do its work, 503 with the failed checks
otherwise: the store answers a query, the spool takes a file, and (for processes that run
the DICOM listener) the listener is bound. Off unless ``monitoring.port`` is set; each
process of a host needs a port of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text

from vlnode.metrics import PROCESS_REGISTRY, StoreCollector
from vlnode.settings import Settings

log = logging.getLogger(__name__)


class MonitoringError(RuntimeError):
    """The monitoring endpoint cannot be served (its port is taken, the address is wrong)."""


# A readiness check returns None when fine, else what is wrong.
Check = Callable[[], str | None]


@dataclass(frozen=True)
class CheckResult:
    name: str
    problem: str | None


def store_reachable(engine: Engine) -> Check:
    def check() -> str | None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"the store does not answer: {type(exc).__name__}: {exc}"
        return None

    return check


def folder_writable(folder: Path) -> Check:
    def check() -> str | None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-"):
                pass
        except OSError as exc:
            return f"cannot write in {folder}: {exc.strerror or exc}"
        return None

    return check


def run_checks(checks: dict[str, Check]) -> list[CheckResult]:
    return [CheckResult(name, check()) for name, check in checks.items()]


class MonitoringServer:
    """Serves the endpoint from a daemon thread until stopped."""

    def __init__(
        self,
        bind_address: str,
        port: int,
        engine: Engine,
        data_dir: Path,
        checks: dict[str, Check],
    ) -> None:
        self.store_registry = CollectorRegistry()
        self.store_registry.register(StoreCollector(engine, data_dir))
        self.checks = checks
        self._server = ThreadingHTTPServer((bind_address, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="monitoring", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("monitoring on http://%s:%d/metrics (/healthz, /readyz)", *self._address())

    def _address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def metrics(self) -> bytes:
        return generate_latest(self.store_registry) + generate_latest(PROCESS_REGISTRY)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body = server.metrics()
                    except Exception as exc:  # the store went away: say so, keep serving
                        log.warning("metrics: cannot read the store: %s", exc)
                        self._send(503, f"cannot read the store: {exc}\n".encode(), "text/plain")
                        return
                    self._send(200, body, CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    results = run_checks(server.checks)
                    ready = all(r.problem is None for r in results)
                    document = {
                        "ready": ready,
                        "pid": os.getpid(),
                        "checks": {r.name: r.problem or "ok" for r in results},
                    }
                    body = (json.dumps(document, indent=1) + "\n").encode()
                    self._send(200 if ready else 503, body, "application/json")
                else:
                    self._send(404, b"/metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the scraper went away
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape would drown the node's log

        return Handler


def start_monitoring(
    settings: Settings, engine: Engine, checks: dict[str, Check]
) -> MonitoringServer | None:
    """The endpoint of ``settings.monitoring`` with the store and spool checks, or None if off."""
    monitoring = settings.monitoring
    if not monitoring.port:
        return None
    every = {
        "store": store_reachable(engine),
        "spool": folder_writable(settings.spool_dir),
        **checks,
    }
    try:
        server = MonitoringServer(
            monitoring.bind_address, monitoring.port, engine, settings.store.data_dir, every
        )
    except OSError as exc:
        raise MonitoringError(
            f"cannot serve monitoring on {monitoring.bind_address}:{monitoring.port}: "
            f"{exc.strerror or exc}; choose another monitoring.port or set it to 0 (off)"
        ) from exc
    server.start()
    return server
