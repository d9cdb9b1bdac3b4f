"""``vlnode deliveries``: list deliveries of results, and queue dead ones again."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vlnode.cli.common import settings_or_exit

STATES = ("pending", "sending", "delivered", "dead")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "deliveries", help="list deliveries of results to the destinations; resend dead ones"
    )
    parser.add_argument("--state", choices=STATES, help="only deliveries in this state")
    parser.add_argument("--limit", type=int, default=50, help="rows to list (default 50)")
    parser.add_argument(
        "--resend",
        type=int,
        nargs="+",
        metavar="ID",
        help="queue these deliveries again now, whatever their state",
    )
    parser.add_argument(
        "--resend-dead", action="store_true", help="queue every dead delivery again now"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from store.database import StoreError, make_engine, upgrade_schema
    from store.outputs import DeliveryState, list_deliveries, resend
    from vlnode.cli.status import table

    settings = settings_or_exit(args)
    if args.limit < 1:
        print("vlnode deliveries: --limit must be at least 1", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        upgrade_schema(engine)
        if args.resend:
            print(f"queued again: {resend(engine, args.resend)} of {len(args.resend)}")
        if args.resend_dead:
            print(f"dead deliveries queued again: {resend(engine)}")
        lines = list_deliveries(
            engine, DeliveryState(args.state) if args.state else None, args.limit
        )
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if not lines:
        print("no deliveries" + (f" in state {args.state}" if args.state else ""))
        return 0
    print(
        table(
            (
                "id",
                "destination",
                "sop instance uid",
                "kind",
                "state",
                "tries",
                "next / done (UTC)",
                "last error",
            ),
            [
                (
                    d.id,
                    d.destination,
                    d.sop_instance_uid,
                    d.kind,
                    d.state,
                    d.attempts,
                    _when(d.delivered_at or d.next_attempt_at),
                    d.last_error or "",
                )
                for d in lines
            ],
        )
    )
    if any(d.state == DeliveryState.DEAD for d in lines):
        print("\nresend dead ones, once fixed: vlnode deliveries --resend-dead (or --resend ID)")
    return 0


def _when(at: Any) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else ""
