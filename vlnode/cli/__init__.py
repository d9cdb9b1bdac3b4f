"""The ``vlnode`` command: one module per command group, each with a ``register`` function.

A command module imports its heavy dependencies inside its handler, so ``vlnode --help`` and
``vlnode echo`` stay fast and the node runs without the training code installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines ``register(subparsers) -> None`` and sets ``func`` on its parser(s).
COMMAND_MODULES: tuple[str, ...] = (
    "vlnode.cli.serve",
    "vlnode.cli.work",
    "vlnode.cli.search",
    "vlnode.cli.echo",
    "vlnode.cli.status",
    "vlnode.cli.volume",
    "vlnode.cli.train",
    "vlnode.cli.evaluate",
    "vlnode.cli.models",
    "vlnode.cli.send",
    "vlnode.cli.deliveries",
    "vlnode.cli.jobs",
    "vlnode.cli.listen",
    "vlnode.cli.audit",
    "vlnode.cli.purge",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlnode", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (TOML); default: the embedded defaults, see conf/vlnode.toml",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
