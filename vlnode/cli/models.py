"""``vlnode models list | show | activate | register``: the model registry.

Packages live under ``<data_dir>/models/<name>/<version>``; the store's ``model_version``
table lists them and marks one active version per task, which the node loads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from vlnode.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("models", help="list, show, activate and register models")
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="registered model versions")
    p.add_argument("--task", help="only this task (findings, impression, segmentation)")
    p.set_defaults(func=run_list)
    p = sub.add_parser("show", help="one version's manifest, hash check and metrics")
    p.add_argument("name")
    p.add_argument("version", nargs="?", help="default: the newest registered")
    p.set_defaults(func=run_show)
    p = sub.add_parser("activate", help="make a version the active one of its task")
    p.add_argument("name")
    p.add_argument("version")
    p.set_defaults(func=run_activate)
    p = sub.add_parser(
        "register",
        help="copy a package folder (e.g. models/findings-medpix-tiny) into the registry",
    )
    p.add_argument("package", metavar="DIR")
    p.set_defaults(func=run_register)


def _sessions(settings: Settings) -> sessionmaker[Session]:
    from store.database import make_engine, make_session_factory, upgrade_schema

    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    return make_session_factory(engine)


def _settings(args: argparse.Namespace) -> Settings | None:
    from vlnode.settings import SettingsError, load_settings

    try:
        return load_settings(args.config)
    except SettingsError as exc:
        print(f"vlnode models: {exc}", file=sys.stderr)
        return None


def register_package(settings: Settings, package: Path, task: str | None = None) -> int:
    """Verify a package, copy it under the registry folder if needed, and add its row."""
    from inference.packages import PackageError, verify_package
    from store.model_registry import RegistryError, register_version

    try:
        manifest = verify_package(package)
    except PackageError as exc:
        print(f"vlnode models: {exc}", file=sys.stderr)
        return 1
    root = (settings.store.data_dir / "models").resolve()
    target = root / manifest.name / manifest.version
    if package.resolve() != target:
        if target.exists():
            print(
                f"vlnode models: {target} exists already; versions are never overwritten",
                file=sys.stderr,
            )
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(package, target)
    factory = _sessions(settings)
    try:
        with factory() as session, session.begin():
            register_version(
                session,
                task or manifest.task,
                manifest.name,
                manifest.version,
                str(target),
                manifest.content_hash,
            )
    except RegistryError as exc:
        print(f"vlnode models: {exc}", file=sys.stderr)
        return 1
    print(f"registered {manifest.name} version {manifest.version} ({manifest.task}) at {target}")
    return 0


def run_register(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    return register_package(settings, Path(args.package))


def run_list(args: argparse.Namespace) -> int:
    from store.model_registry import list_versions

    settings = _settings(args)
    if settings is None:
        return 2
    with _sessions(settings)() as session:
        rows = list_versions(session, args.task)
        if not rows:
            print("no model versions registered")
            return 0
        print(f"{'task':<13} {'name':<28} {'version':<8} {'active':<6} {'hash':<12} registered")
        for r in rows:
            print(
                f"{r.task:<13} {r.name:<28} {r.version:<8} {'yes' if r.active else '':<6} "
                f"{r.content_hash[:12]:<12} {r.registered_at:%Y-%m-%d %H:%M}"
            )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from inference.packages import PackageError, verify_package
    from store.model_registry import find_version, list_versions

    settings = _settings(args)
    if settings is None:
        return 2
    with _sessions(settings)() as session:
        if args.version:
            row = find_version(session, args.name, args.version)
        else:
            rows = [r for r in list_versions(session) if r.name == args.name]
            row = rows[-1] if rows else None
        if row is None:
            print(
                f"vlnode models: {args.name} {args.version or ''} is not registered",
                file=sys.stderr,
            )
            return 1
        print(f"name      {row.name}\nversion   {row.version}\ntask      {row.task}")
        print(f"active    {'yes' if row.active else 'no'}\npath      {row.path}")
        print(f"hash      {row.content_hash}\nregistered {row.registered_at.isoformat()}")
        path = Path(row.path)
    try:
        manifest = verify_package(path)
        ok = manifest.content_hash == row.content_hash
        print(f"integrity {'ok' if ok else 'MISMATCH with the registered hash'}")
    except PackageError as exc:
        print(f"integrity FAILED: {exc}")
        return 1
    metrics = path / "metrics.json"
    if metrics.is_file():
        from training.evaluate.card import metric_lines

        print("\n".join(metric_lines(json.loads(metrics.read_text(encoding="utf-8")))))
    return 0 if ok else 1


def run_activate(args: argparse.Namespace) -> int:
    from inference.packages import PackageError, verify_package
    from store.model_registry import RegistryError, activate_version, find_version

    settings = _settings(args)
    if settings is None:
        return 2
    factory = _sessions(settings)
    try:
        with factory() as session, session.begin():
            row = find_version(session, args.name, args.version)
            if row is None:
                raise RegistryError(f"model {args.name} version {args.version} is not registered")
            manifest = verify_package(Path(row.path))
            if manifest.content_hash != row.content_hash:
                raise PackageError(f"{row.path} no longer matches its registered hash")
            activate_version(session, args.name, args.version)
    except (RegistryError, PackageError) as exc:
        print(f"vlnode models: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} version {args.version} is now the active {row.task} model")
    return 0
