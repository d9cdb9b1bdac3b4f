"""``vlnode work``: run only the worker (read ready studies) against the configured store."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from vlnode.cli.common import settings_or_exit


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "work", help="run only the worker: read ready studies and queue their results"
    )
    parser.add_argument("--name", help="this worker's name in the job table (default: host-pid)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inference.packages import PackageError
    from inference.routing import RoutingError
    from store.database import StoreError, make_engine, upgrade_schema
    from store.jobs import requeue_jobs_of_worker
    from store.retention import PeriodicPurge, RetentionPolicy
    from vlnode.health import MonitoringError, start_monitoring
    from vlnode.node import configure_logging
    from vlnode.workers import build_worker

    settings = settings_or_exit(args)
    configure_logging(settings.logging.level)
    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
        worker = build_worker(settings, engine, args.name)
    except (StoreError, RoutingError, PackageError) as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    requeue_jobs_of_worker(engine, worker.name, max_attempts=settings.worker.max_attempts)
    retention = settings.retention
    purge = PeriodicPurge(
        engine,
        settings.store.data_dir,
        RetentionPolicy(retention.keep_days, retention.min_free_disk_mb * 2**20),
        retention.interval_seconds,
    )
    try:
        monitoring = start_monitoring(settings, engine, {})
    except MonitoringError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    worker.start()
    purge.start()
    stop.wait()
    if monitoring is not None:
        monitoring.stop()
    purge.stop()
    worker.stop()
    engine.dispose()
    return 0
