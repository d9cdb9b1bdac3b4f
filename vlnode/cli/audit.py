"""``vlnode audit``: the audit trail (associations, rejections, jobs, deliveries) as text,
CSV or JSON, to the terminal or a file."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlnode.cli.common import settings_or_exit

FORMATS = ("text", "csv", "json")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "audit", help="print or export the audit trail: associations, jobs, deliveries"
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only events at or after this time: ISO 8601 (2026-01-31, 2026-01-31T08:00, "
        "UTC unless a zone is given) or an age such as 24h or 7d",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="default: text")
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of the terminal")
    parser.set_defaults(func=run)


def parse_since(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC when no zone is given) or an age: ``90m``, ``24h``, ``7d``."""
    units = {"m": 60, "h": 3600, "d": 86_400}
    text = value.strip()
    if text[-1:] in units and text[:-1].isdigit():
        seconds = int(text[:-1]) * units[text[-1]]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {value!r} is neither an ISO 8601 time (2026-01-31T08:00) nor an age "
            "(90m, 24h, 7d)"
        ) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def render(records: Sequence[Any], form: str) -> str:
    """The records (store.audit.AuditRecord) as ``text``, ``csv`` or ``json``."""
    rows = [{**dataclasses.asdict(r), "at": r.at.astimezone(dt.UTC).isoformat()} for r in records]
    if form == "json":
        return json.dumps(rows, indent=1) + "\n"
    if form == "csv":
        out = io.StringIO()
        names = [f.name for f in dataclasses.fields(records[0])] if records else _FIELDS
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    from vlnode.cli.status import table

    return (
        table(
            ("time (UTC)", "kind", "peer AE", "address", "outcome", "detail"),
            [
                (
                    r.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r.kind,
                    r.peer_ae_title,
                    r.peer_address,
                    r.outcome,
                    r.detail,
                )
                for r in records
            ],
        )
        + "\n"
    )


_FIELDS = ["at", "kind", "peer_ae_title", "peer_address", "outcome", "detail"]


def run(args: argparse.Namespace) -> int:
    from store.audit import audit_trail
    from store.database import StoreError, make_engine, upgrade_schema

    settings = settings_or_exit(args)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"vlnode audit: {exc}", file=sys.stderr)
        return 2
    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
        records = audit_trail(engine, since)
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    finally:
        if "engine" in locals():
            engine.dispose()
    text = render(records, args.format)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            print(f"vlnode audit: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"{len(records)} event(s) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
