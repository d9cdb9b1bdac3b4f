"""The model registry's rows: which package versions exist, and which one is active per task.

The packages themselves live in the data directory (``<data_dir>/models/<name>/<version>``);
these functions keep the ``model_version`` table in step and record activations as audit
events. Callers own the session and the commit.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.tables import AuditEvent, ModelVersion

TASKS = ("findings", "impression", "segmentation")


class RegistryError(ValueError):
    """A model version is unknown, registered twice, or of an unknown task."""


def register_version(
    session: Session, task: str, name: str, version: str, path: str, content_hash: str
) -> ModelVersion:
    """Add a (not yet active) version; registering the same name and version again is an error."""
    if task not in TASKS:
        raise RegistryError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if find_version(session, name, version) is not None:
        raise RegistryError(f"model {name} version {version} is registered already")
    row = ModelVersion(
        task=task, name=name, version=version, path=path, content_hash=content_hash, active=False
    )
    session.add(row)
    session.add(AuditEvent(kind="model_registered", detail=f"{task}: {name} {version} at {path}"))
    session.flush()
    return row


def find_version(session: Session, name: str, version: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).one_or_none()


def list_versions(session: Session, task: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(
        ModelVersion.task, ModelVersion.name, ModelVersion.registered_at, ModelVersion.id
    )
    if task:
        query = query.where(ModelVersion.task == task)
    return list(session.scalars(query))


def activate_version(session: Session, name: str, version: str) -> ModelVersion:
    """Make one version the active one of its task (every other version of the task inactive)."""
    row = find_version(session, name, version)
    if row is None:
        raise RegistryError(f"model {name} version {version} is not registered")
    session.execute(update(ModelVersion).where(ModelVersion.task == row.task).values(active=False))
    row.active = True
    session.add(AuditEvent(kind="model_activated", detail=f"{row.task}: {name} {version}"))
    session.flush()
    return row


def active_version(session: Session, task: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.task == task, ModelVersion.active.is_(True))
    ).one_or_none()
