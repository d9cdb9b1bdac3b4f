"""Building the worker from the settings: routing rules, device, the registry's packages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from inference.packages import PackageError
from inference.reader import StudyReader, choose_device
from inference.routing import load_routing
from inference.worker import Worker, default_worker_name
from store.database import make_session_factory
from store.model_registry import list_versions
from vlnode.settings import Settings


def registry_resolver(engine: Engine, data_dir: Path) -> Callable[[str], Path]:
    """Resolve ``registry:NAME`` (its active version) or ``registry:NAME@VERSION``."""
    sessions = make_session_factory(engine)

    def resolve(reference: str) -> Path:
        name, _, version = reference.removeprefix("registry:").partition("@")
        with sessions() as session:
            rows = [r for r in list_versions(session) if r.name == name]
            if version:
                rows = [r for r in rows if r.version == version]
            else:
                rows = [r for r in rows if r.active]
            if not rows:
                which = f"version {version}" if version else "active version"
                raise PackageError(
                    f"routing names {reference}, but the registry has no {which} of {name!r}: "
                    "see `vlnode models list`, then `vlnode models activate`"
                )
            path = Path(rows[0].path)
        return path if path.is_absolute() else data_dir / path

    return resolve


def build_worker(settings: Settings, engine: Engine, name: str | None = None) -> Worker:
    """A worker reading with the configured routing rules (checked now: a bad rule stops start)."""
    table = load_routing(settings.routing_file)
    reader = StudyReader(
        table,
        choose_device(settings.worker.device),
        registry_resolver(engine, settings.store.data_dir),
    )
    return Worker(settings, engine, reader, name or settings.worker.name or default_worker_name())
