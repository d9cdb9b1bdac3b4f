"""Prometheus metrics: what the store says about the whole node, and what this process timed.

Two kinds, served together by the monitoring endpoint (vlnode.health):

* ``vlnode_store_*``: counted from the database at scrape time (:class:`StoreCollector`):
  associations accepted and rejected, instances and bytes received, studies ready, jobs by
  state, deliveries by state and their tries, and the data directory's free disk. The store is
  the one place every listener process and every host writes to, so these count the whole
  node whichever process is scraped, and no counter is lost when a process dies. (The
  alternative, prometheus-client's multiprocess mode, covers processes of one host only and
  needs a shared folder of its own.) Every process reports the same values: scrape one.
* ``vlnode_job_*``, ``vlnode_model_*``, ``vlnode_delivery_*``: observed in this process as it
  works (per-stage durations, model inference time, this sender's tries); scrape each worker
  and sender process.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from store.tables import (
    Association,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Study,
)

# This process's own observations; vlnode.health serves them beside the store's.
PROCESS_REGISTRY = CollectorRegistry()

# Stage timings of a job (inference.reader's keys, plus the worker's "encode"); a key
# "model <package>" is the model inference time and goes to its own histogram.
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
JOB_STAGE_SECONDS = Histogram(
    "vlnode_job_stage_seconds",
    "Seconds a job spent in each stage (package load, rebuild, headers, encode)",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=PROCESS_REGISTRY,
)
MODEL_INFERENCE_SECONDS = Histogram(
    "vlnode_model_inference_seconds",
    "Seconds a model package took to read a study's series",
    ["package"],
    buckets=_STAGE_BUCKETS,
    registry=PROCESS_REGISTRY,
)
JOBS_FINISHED = Counter(
    "vlnode_jobs_finished",
    "Jobs this worker process ended, by final state",
    ["state"],
    registry=PROCESS_REGISTRY,
)
DELIVERY_TRIES = Counter(
    "vlnode_delivery_tries",
    "Deliveries this sender process tried, by outcome (delivered, retry, dead)",
    ["outcome"],
    registry=PROCESS_REGISTRY,
)

_MODEL_PREFIX = "model "


def observe_job(state: str, timings: dict[str, float]) -> None:
    """Record a job this process ended: its final state and each stage's seconds."""
    JOBS_FINISHED.labels(state=state).inc()
    for stage, seconds in timings.items():
        if stage.startswith(_MODEL_PREFIX):
            MODEL_INFERENCE_SECONDS.labels(package=stage.removeprefix(_MODEL_PREFIX)).observe(
                seconds
            )
        else:
            JOB_STAGE_SECONDS.labels(stage=stage).observe(seconds)


def observe_delivery_try(outcome: str) -> None:
    """Record one try of this sender: ``delivered``, ``retry`` or ``dead``."""
    DELIVERY_TRIES.labels(outcome=outcome).inc()


class StoreCollector(Collector):
    """Counts from the store (and the data directory's disk), read at each scrape."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.data_dir = data_dir

    def collect(self) -> Iterator[Metric]:
        with self.engine.connect() as conn:
            associations = dict(
                conn.execute(
                    select(Association.accepted, func.count()).group_by(Association.accepted)
                ).all()
            )
            ended = conn.execute(
                select(
                    func.coalesce(func.sum(Association.instances_stored), 0),
                    func.coalesce(func.sum(Association.instances_duplicate), 0),
                    func.coalesce(func.sum(Association.instances_failed), 0),
                )
            ).one()
            stored, stored_bytes = conn.execute(
                select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0))
            ).one()
            purged, purged_bytes = conn.execute(
                select(
                    func.coalesce(func.sum(Study.purged_instances), 0),
                    func.coalesce(func.sum(Study.purged_bytes), 0),
                )
            ).one()
            jobs_created = conn.scalar(select(func.count(Job.id))) or 0
            jobs = dict(conn.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            deliveries = dict(
                conn.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
            )
            tries = dict(
                conn.execute(
                    select(DeliveryAttempt.outcome, func.count()).group_by(DeliveryAttempt.outcome)
                ).all()
            )

        family = CounterMetricFamily(
            "vlnode_store_associations",
            "Association requests, by result (accepted, rejected by the association policy)",
            labels=["result"],
        )
        family.add_metric(["accepted"], int(associations.get(True, 0)))
        family.add_metric(["rejected"], int(associations.get(False, 0)))
        yield family

        family = CounterMetricFamily(
            "vlnode_store_instances_received",
            "Instances stored (new, including those retention removed since)",
        )
        family.add_metric([], int(stored) + int(purged))
        yield family
        family = CounterMetricFamily(
            "vlnode_store_received_bytes", "Bytes of the instances stored (new)"
        )
        family.add_metric([], int(stored_bytes) + int(purged_bytes))
        yield family
        family = CounterMetricFamily(
            "vlnode_store_association_instances",
            "Instances of ended associations, by outcome (stored, duplicate, failed)",
            labels=["outcome"],
        )
        for outcome, count in zip(("stored", "duplicate", "failed"), ended, strict=True):
            family.add_metric([outcome], int(count))
        yield family

        family = CounterMetricFamily(
            "vlnode_store_studies_ready", "Studies that went quiet and got a job queued"
        )
        family.add_metric([], int(jobs_created))
        yield family
        gauge = GaugeMetricFamily("vlnode_store_jobs", "Jobs by state", labels=["state"])
        for state in JobState:
            gauge.add_metric([str(state)], int(jobs.get(state, 0)))
        yield gauge

        gauge = GaugeMetricFamily(
            "vlnode_store_deliveries", "Deliveries by state", labels=["state"]
        )
        for delivery_state in DeliveryState:
            gauge.add_metric([str(delivery_state)], int(deliveries.get(delivery_state, 0)))
        yield gauge
        family = CounterMetricFamily(
            "vlnode_store_delivery_tries",
            "Tries of the senders, by outcome (delivered, retry: failed and tried again, dead)",
            labels=["outcome"],
        )
        for outcome in ("delivered", "retry", "dead"):
            family.add_metric([outcome], int(tries.get(outcome, 0)))
        yield family

        usage = shutil.disk_usage(self.data_dir)
        gauge = GaugeMetricFamily(
            "vlnode_spool_disk_free_bytes", "Free bytes on the data directory's file system"
        )
        gauge.add_metric([], usage.free)
        yield gauge
