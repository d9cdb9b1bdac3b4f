"""``vlnode serve``: run the node on the configured port until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vlnode.cli.common import settings_or_exit


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve", help="run the DICOM node: listener, stable studies, worker and sender together"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parts: frozenset[str] | None = None) -> int:
    """Run the node's ``parts`` (vlnode.node; all of them when None) until signalled."""
    from inference.packages import PackageError
    from inference.routing import RoutingError
    from store.database import StoreError
    from vlnode.health import MonitoringError
    from vlnode.node import ALL_PARTS, Node, configure_logging

    settings = settings_or_exit(args)
    configure_logging(settings.logging.level)
    try:
        node = Node(settings, parts or ALL_PARTS)
    except (StoreError, RoutingError, PackageError) as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    try:
        node.run_until_signalled()
    except MonitoringError as exc:
        node.stop()
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"vlnode: cannot listen on {settings.node.bind_address}:{settings.node.port}: "
            f"{exc.strerror or exc}. Choose another node.port or stop what uses it.",
            file=sys.stderr,
        )
        return 2
    return 0
