"""Spool retention: remove a study's received instances and outputs once nothing needs them.

A study may be purged only when it is finished with: its latest instances are covered by a
job (it is not receiving), no job of it is queued or running, and every delivery of its
outputs is delivered or dead. Of those, a policy picks the ones whose last activity (the last
instance, a job's end, a delivery try) is older than ``keep_days``, and, while the disk holds
less free space than ``min_free_bytes``, the oldest first whatever their age.

What happens to the rows: the instance rows are deleted with their files, so a study the PACS
sends again is received and read anew (a kept row would make every re-sent instance a
"duplicate" with no file behind it). The study row stays, with ``purged_at`` and the count
and bytes removed (metrics of what was received never go down); output and delivery rows stay
with the output's ``purged_at``, so the audit trail keeps what was sent where.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, delete, exists, func, or_, select, update

from store.tables import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Output,
    Series,
    Study,
    utcnow,
)

log = logging.getLogger(__name__)

_BUSY_JOB = (JobState.QUEUED, JobState.RUNNING)
_BUSY_DELIVERY = (DeliveryState.PENDING, DeliveryState.SENDING)


@dataclass(frozen=True)
class RetentionPolicy:
    """When studies are purged; both limits 0 means never."""

    keep_days: float = 0.0
    min_free_bytes: int = 0

    def __post_init__(self) -> None:
        if self.keep_days < 0 or self.min_free_bytes < 0:
            raise ValueError("retention keep_days and min_free_disk_mb must be 0 (off) or more")

    @property
    def enabled(self) -> bool:
        return self.keep_days > 0 or self.min_free_bytes > 0


@dataclass(frozen=True)
class PurgeCandidate:
    """A finished study whose files may be removed."""

    study_id: int
    study_instance_uid: str
    last_received_at: dt.datetime  # compared again when purging: a new instance keeps it
    last_activity: dt.datetime
    instances: int
    instance_bytes: int


@dataclass(frozen=True)
class PurgedStudy:
    study_instance_uid: str
    last_activity: dt.datetime
    why: str  # "older than N days" | "disk below its floor"
    instances: int
    bytes: int


@dataclass(frozen=True)
class PurgeReport:
    studies: tuple[PurgedStudy, ...]
    files_removed: int
    dry_run: bool

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.studies)


def purge_candidates(engine: Engine) -> list[PurgeCandidate]:
    """Every study that nothing needs any more and that has files left, oldest activity first."""
    busy_job = exists().where(Job.study_id == Study.id, Job.state.in_(_BUSY_JOB))
    busy_delivery = (
        exists()
        .where(
            Output.study_instance_uid == Study.study_instance_uid,
            Delivery.output_id == Output.id,
            Delivery.state.in_(_BUSY_DELIVERY),
        )
        .correlate(Study)
    )
    has_instances = exists().where(Series.study_id == Study.id, Instance.series_id == Series.id)
    has_outputs = exists().where(
        Output.study_instance_uid == Study.study_instance_uid,
        or_(Output.purged_at.is_(None), Output.purged_at < Output.updated_at),
    )
    with engine.connect() as conn:
        studies = conn.execute(
            select(Study.id, Study.study_instance_uid, Study.last_received_at).where(
                Study.ready_through.is_not(None),
                Study.ready_through >= Study.last_received_at,
                ~busy_job,
                ~busy_delivery,
                or_(has_instances, has_outputs),
            )
        ).all()
        if not studies:
            return []
        ids = [row.id for row in studies]
        uids = [row.study_instance_uid for row in studies]
        job_ends = dict(
            conn.execute(
                select(Job.study_id, func.max(Job.finished_at))
                .where(Job.study_id.in_(ids))
                .group_by(Job.study_id)
            ).all()
        )
        delivery_tries = dict(
            conn.execute(
                select(Output.study_instance_uid, func.max(DeliveryAttempt.at))
                .join(Delivery, Delivery.output_id == Output.id)
                .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
                .where(Output.study_instance_uid.in_(uids))
                .group_by(Output.study_instance_uid)
            ).all()
        )
        sizes = {
            study_id: (int(count), int(size or 0))
            for study_id, count, size in conn.execute(
                select(Series.study_id, func.count(Instance.id), func.sum(Instance.size_bytes))
                .join(Instance, Instance.series_id == Series.id)
                .where(Series.study_id.in_(ids))
                .group_by(Series.study_id)
            )
        }
    candidates = []
    for row in studies:
        moments = [row.last_received_at, job_ends.get(row.id), delivery_tries.get(row[1])]
        count, size = sizes.get(row.id, (0, 0))
        candidates.append(
            PurgeCandidate(
                row.id,
                row.study_instance_uid,
                row.last_received_at,
                max(m for m in moments if m is not None),
                count,
                size,
            )
        )
    return sorted(candidates, key=lambda c: (c.last_activity, c.study_id))


def choose(
    candidates: list[PurgeCandidate], policy: RetentionPolicy, now: dt.datetime, free_bytes: int
) -> list[tuple[PurgeCandidate, str]]:
    """The candidates the policy removes, each with why: by age, then oldest first to the floor.

    The floor counts instance bytes only (outputs are small next to the images).
    """
    chosen: list[tuple[PurgeCandidate, str]] = []
    rest = candidates
    if policy.keep_days > 0:
        cutoff = now - dt.timedelta(days=policy.keep_days)
        chosen = [
            (c, f"older than {policy.keep_days:g} days") for c in rest if c.last_activity <= cutoff
        ]
        rest = [c for c in rest if c.last_activity > cutoff]
        free_bytes += sum(c.instance_bytes for c, _ in chosen)
    if policy.min_free_bytes > 0:
        for candidate in rest:  # oldest first
            if free_bytes >= policy.min_free_bytes:
                break
            chosen.append((candidate, "disk below its floor"))
            free_bytes += candidate.instance_bytes
    return chosen


def disk_free_bytes(data_dir: Path) -> int:
    return shutil.disk_usage(data_dir).free


def purge(
    engine: Engine,
    data_dir: Path,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    free_bytes: Callable[[Path], int] = disk_free_bytes,
) -> PurgeReport:
    """Apply ``policy``: remove the chosen studies' files and instance rows (none with dry_run)."""
    now = now or utcnow()
    if not policy.enabled:
        return PurgeReport((), 0, dry_run)
    chosen = choose(purge_candidates(engine), policy, now, free_bytes(data_dir))
    purged: list[PurgedStudy] = []
    removed = 0
    for candidate, why in chosen:
        if dry_run:
            files: list[str] | None = []
            count, size = candidate.instances, candidate.instance_bytes
        else:
            files, count, size = _purge_rows(engine, candidate, now)
            if files is None:
                continue  # it received an instance or a job meanwhile: kept
            removed += _remove_files(data_dir, files)
        purged.append(
            PurgedStudy(candidate.study_instance_uid, candidate.last_activity, why, count, size)
        )
    if purged and not dry_run:
        log.info(
            "retention: purged %d study(ies), %d file(s), %.1f MB",
            len(purged),
            removed,
            sum(p.bytes for p in purged) / 2**20,
        )
    return PurgeReport(tuple(purged), removed, dry_run)


def _purge_rows(
    engine: Engine, candidate: PurgeCandidate, now: dt.datetime
) -> tuple[list[str] | None, int, int]:
    """In one transaction: claim the study (unchanged, still idle), delete its instance rows,
    mark its outputs; return the files to remove (None when the study is busy again)."""
    idle = and_(
        Study.id == candidate.study_id,
        Study.last_received_at == candidate.last_received_at,
        ~exists().where(Job.study_id == Study.id, Job.state.in_(_BUSY_JOB)),
    )
    with engine.begin() as conn:
        instances = _study_instances(conn, candidate.study_id)
        size = sum(s for _, _, s in instances)
        claimed = conn.execute(
            update(Study)
            .where(idle)
            .values(
                purged_at=now,
                purged_instances=Study.purged_instances + len(instances),
                purged_bytes=Study.purged_bytes + size,
            )
        ).rowcount
        if not claimed:
            return None, 0, 0
        if instances:
            conn.execute(delete(Instance).where(Instance.id.in_([i for i, _, _ in instances])))
        outputs = [
            path
            for (path,) in conn.execute(
                select(Output.file_path).where(
                    Output.study_instance_uid == candidate.study_instance_uid
                )
            )
        ]
        conn.execute(
            update(Output)
            .where(Output.study_instance_uid == candidate.study_instance_uid)
            .values(purged_at=now)
        )
    return [p for _, p, _ in instances] + outputs, len(instances), size


def _study_instances(conn: Connection, study_id: int) -> list[tuple[int, str, int]]:
    return [
        (int(i), str(p), int(s))
        for i, p, s in conn.execute(
            select(Instance.id, Instance.file_path, Instance.size_bytes)
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id == study_id)
        )
    ]


def _remove_files(data_dir: Path, relative_paths: list[str]) -> int:
    """Unlink the files (already gone is fine), then the folders they leave empty."""
    root = data_dir.resolve()
    removed = 0
    folders: set[Path] = set()
    for relative in relative_paths:
        path = (root / relative).resolve()
        if (
            root not in path.parents or path.parent == root
        ):  # a row pointing outside the data directory: never
            log.error("retention: not removing %s, outside the data directory %s", path, root)
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        # The study's and series' folders, never the spool or outputs folder itself.
        folders.update(p for p in path.parents if len(p.parts) - len(root.parts) >= 2)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        # Not empty (another series, a new instance) or gone: left as it is.
        with contextlib.suppress(OSError):
            folder.rmdir()
    return removed


class PeriodicPurge:
    """Applies the policy every ``interval`` seconds in a daemon thread (serve, work)."""

    def __init__(
        self, engine: Engine, data_dir: Path, policy: RetentionPolicy, interval: float
    ) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.policy = policy
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        if self.policy.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                purge(self.engine, self.data_dir, self.policy)
            except Exception:  # the database went away: try at the next interval
                log.exception("retention: cannot apply the policy; trying again later")
