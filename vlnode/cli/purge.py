"""``vlnode purge``: apply the retention policy now (``--dry-run`` lists what would go)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vlnode.cli.common import settings_or_exit


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "purge",
        help="remove received instances and outputs of finished studies by the retention policy",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the studies that would be purged; remove nothing",
    )
    parser.add_argument(
        "--keep-days",
        type=float,
        metavar="DAYS",
        help="instead of retention.keep_days: purge studies idle for longer than this",
    )
    parser.add_argument(
        "--min-free-disk-mb",
        type=int,
        metavar="MB",
        help="instead of retention.min_free_disk_mb: purge oldest first up to this free space",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from store.database import StoreError, make_engine, upgrade_schema
    from store.retention import RetentionPolicy, purge
    from vlnode.cli.status import table

    settings = settings_or_exit(args)
    retention = settings.retention
    keep_days = retention.keep_days if args.keep_days is None else args.keep_days
    floor_mb = (
        retention.min_free_disk_mb if args.min_free_disk_mb is None else args.min_free_disk_mb
    )
    try:
        policy = RetentionPolicy(keep_days, floor_mb * 2**20)
    except ValueError as exc:
        print(f"vlnode purge: {exc}", file=sys.stderr)
        return 2
    if not policy.enabled:
        print(
            "vlnode purge: no retention policy: set retention.keep_days or "
            "retention.min_free_disk_mb (or pass --keep-days / --min-free-disk-mb)",
            file=sys.stderr,
        )
        return 2
    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
        report = purge(engine, settings.store.data_dir, policy, dry_run=args.dry_run)
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    engine.dispose()
    verb = "would purge" if args.dry_run else "purged"
    print(
        f"{verb} {len(report.studies)} study(ies), {report.bytes / 2**20:.1f} MB of instances"
        + ("" if args.dry_run else f", {report.files_removed} file(s) removed")
    )
    if report.studies:
        print(
            table(
                ("study instance uid", "last activity (UTC)", "instances", "MB", "why"),
                [
                    (
                        s.study_instance_uid,
                        s.last_activity.strftime("%Y-%m-%d %H:%M:%S"),
                        s.instances,
                        f"{s.bytes / 2**20:.1f}",
                        s.why,
                    )
                    for s in report.studies
                ],
            )
        )
    return 0
