"""``vlnode listen``: run only the DICOM listener (and the stable-study detector).

For a node split over several processes or hosts: listeners, ``vlnode work`` and
``vlnode send`` share one PostgreSQL store and one spool (a shared file system).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "listen",
        help="run only the DICOM listener: store what arrives, queue a job per quiet study",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlnode.cli import serve
    from vlnode.node import LISTEN

    return serve.run(args, frozenset({LISTEN}))
