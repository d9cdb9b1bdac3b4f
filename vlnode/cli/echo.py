"""``vlnode echo AE@host:port``: C-ECHO a peer (is the PACS reachable and does it accept us?)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from vlnode.cli.common import settings_or_exit

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")


def register(sub: Any) -> None:
    parser = sub.add_parser("echo", help="send a C-ECHO to AE@host:port")
    parser.add_argument("peer", help="the peer as AE_TITLE@host:port, e.g. ORTHANC@localhost:4242")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    match = _PEER.match(args.peer)
    if not match:
        print(f"vlnode: peer {args.peer!r} is not AE_TITLE@host:port", file=sys.stderr)
        return 2
    from dicom_node.echo import echo

    settings = settings_or_exit(args)
    result = echo(
        calling_ae=settings.node.ae_title,
        called_ae=match["ae"],
        host=match["host"],
        port=int(match["port"]),
        timeout=args.timeout,
    )
    print(result.message)
    return 0 if result.ok else 1
