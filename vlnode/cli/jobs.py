"""``vlnode jobs``: list the worker's jobs, and queue failed or skipped ones again."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vlnode.cli.common import settings_or_exit

STATES = ("queued", "running", "done", "failed", "skipped")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "jobs", help="list reading jobs with their reasons; queue failed or skipped ones again"
    )
    parser.add_argument("--state", choices=STATES, help="only jobs in this state")
    parser.add_argument("--limit", type=int, default=50, help="rows to list (default 50)")
    parser.add_argument(
        "--retry",
        type=int,
        nargs="+",
        metavar="ID",
        help="queue these failed or skipped jobs again (after fixing what the reason names)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="queue every failed job again")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from store.database import StoreError, make_engine, upgrade_schema
    from store.jobs import JobState, list_jobs, retry_jobs
    from vlnode.cli.status import table

    settings = settings_or_exit(args)
    if args.limit < 1:
        print("vlnode jobs: --limit must be at least 1", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    code = 0
    try:
        upgrade_schema(engine)
        wanted = list(args.retry or [])
        if args.retry_failed:
            wanted += [j.job_id for j in list_jobs(engine, JobState.FAILED, limit=1_000_000)]
        if wanted:
            outcome = retry_jobs(engine, wanted)
            refused = {job: why for job, why in outcome.items() if why}
            print(f"queued again: {len(outcome) - len(refused)} of {len(outcome)}")
            for why in refused.values():
                print(f"vlnode jobs: {why}", file=sys.stderr)
            code = 1 if refused and args.retry else 0
        lines = list_jobs(engine, JobState(args.state) if args.state else None, args.limit)
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if not lines:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
        return code
    print(
        table(
            ("id", "study instance uid", "state", "tries", "worker", "ended (UTC)", "reason"),
            [
                (
                    j.job_id,
                    j.study_instance_uid,
                    j.state,
                    j.attempts,
                    j.worker or "",
                    f"{j.finished_at:%Y-%m-%d %H:%M:%S}" if j.finished_at else "",
                    j.reason or "",
                )
                for j in lines
            ],
        )
    )
    if any(j.state == JobState.FAILED for j in lines):
        print("\nonce fixed, read them again: vlnode jobs --retry ID (or --retry-failed)")
    return code
