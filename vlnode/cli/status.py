"""``vlnode status``: what arrived, what is queued, who connected, as readable tables."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlnode.cli.common import settings_or_exit


def register(sub: Any) -> None:
    parser = sub.add_parser("status", help="show studies, jobs, deliveries and recent associations")
    parser.add_argument("--limit", type=int, default=10, help="rows per table (default 10)")
    parser.add_argument(
        "--json", action="store_true", help="print the same as one JSON document (for scripts)"
    )
    parser.set_defaults(func=run)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_json(summary: Any, data_dir: Path) -> str:
    """The summary (store.summary.NodeSummary) as JSON: times in ISO 8601 UTC."""
    document = {"data_directory": str(data_dir), **dataclasses.asdict(summary)}
    return json.dumps(document, indent=2, default=_json_value)


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)  # enum states


def run(args: argparse.Namespace) -> int:
    from store.database import StoreError, make_engine, upgrade_schema
    from store.summary import summarise

    settings = settings_or_exit(args)
    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
        summary = summarise(engine, args.limit)
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(summary_json(summary, settings.store.data_dir.resolve()))
        return 0
    jobs = ", ".join(f"{k} {v}" for k, v in sorted(summary.jobs_by_state.items())) or "none"
    print(f"data directory: {settings.store.data_dir.resolve()}")
    deliveries = (
        ", ".join(f"{k} {v}" for k, v in sorted(summary.deliveries_by_state.items())) or "none"
    )
    print(
        f"studies {summary.studies}, series {summary.series}, instances {summary.instances}, "
        f"quarantined {summary.quarantined}; jobs: {jobs}"
    )
    print(f"outputs {summary.outputs}; deliveries: {deliveries}\n")
    print("Recent studies")
    print(
        table(
            ("study instance uid", "series", "instances", "last received (UTC)", "job"),
            [
                (
                    s.study_instance_uid,
                    s.series,
                    s.instances,
                    s.last_received_at.strftime("%Y-%m-%d %H:%M:%S"),
                    (s.job_state or "receiving")
                    + (f": {s.job_reason}" if s.job_state in ("failed", "skipped") else ""),
                )
                for s in summary.recent_studies
            ],
        )
    )
    print("\nRecent associations")
    print(
        table(
            ("started (UTC)", "calling AE", "host", "result", "stored", "dup", "failed"),
            [
                (
                    a.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                    a.calling_ae_title,
                    a.peer_host,
                    ("accepted" if a.accepted else f"rejected: {a.reason}")
                    + ("" if a.ended or not a.accepted else " (open)"),
                    a.stored,
                    a.duplicate,
                    a.failed,
                )
                for a in summary.recent_associations
            ],
        )
    )
    if summary.dead_letters:
        print("\nDeliveries given up (dead letters)")
        print(
            table(
                ("id", "destination", "sop instance uid", "kind", "tries", "error"),
                [
                    (d.id, d.destination, d.sop_instance_uid, d.kind, d.attempts, d.last_error)
                    for d in summary.dead_letters
                ],
            )
        )
        print(
            "once the cause is fixed: vlnode deliveries --resend-dead "
            "(or --resend ID ...); vlnode deliveries lists them all"
        )
    return 0
