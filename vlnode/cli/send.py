"""``vlnode send``: run only the sender (deliver results to the destinations) until stopped."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from typing import Any

from vlnode.cli.common import settings_or_exit


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "send", help="run only the sender: deliver SR and SEG results to the destinations"
    )
    parser.add_argument(
        "--name", help="this sender's name in the delivery table (default: host-pid)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_node.sender import Sender
    from store.database import StoreError, make_engine, upgrade_schema
    from vlnode.health import MonitoringError, start_monitoring
    from vlnode.node import configure_logging

    settings = settings_or_exit(args)
    configure_logging(settings.logging.level)
    if not settings.destinations:
        # Still run: deliveries to a destination no longer configured end dead, with the reason.
        print(
            "vlnode send: no destinations are configured: results cannot be delivered. "
            "Add [[destinations]] to the configuration file.",
            file=sys.stderr,
        )
    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    sender = Sender(settings, engine, args.name or f"{socket.gethostname()}-{os.getpid()}-sender")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        monitoring = start_monitoring(settings, engine, {})
    except MonitoringError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    sender.start()
    stop.wait()
    if monitoring is not None:
        monitoring.stop()
    sender.stop()
    engine.dispose()
    return 0
