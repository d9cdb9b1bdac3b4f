"""Routing's registry references resolve to the registry's package folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.packages import PackageError
from store.database import make_engine, make_session_factory, upgrade_schema
from store.model_registry import activate_version, register_version
from vlnode.workers import registry_resolver


def test_registry_references_resolve_to_the_active_or_named_version(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade_schema(engine)
    resolve = registry_resolver(engine, tmp_path)
    with pytest.raises(PackageError, match=r"no active version of 'chest'.*vlnode models"):
        resolve("registry:chest")
    with make_session_factory(engine).begin() as session:
        register_version(session, "findings", "chest", "1", "models/chest/1", "a" * 64)
        register_version(session, "findings", "chest", "2", str(tmp_path / "elsewhere"), "b" * 64)
    assert resolve("registry:chest@2") == tmp_path / "elsewhere"
    with pytest.raises(PackageError, match="no active version"):
        resolve("registry:chest")
    with make_session_factory(engine).begin() as session:
        activate_version(session, "chest", "1")
    assert resolve("registry:chest") == tmp_path / "models" / "chest" / "1"
    with pytest.raises(PackageError, match="no version 3"):
        resolve("registry:chest@3")
    engine.dispose()
