"""Fixtures of the volume tests: the shared real series, and series written on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

# The repository is checked out beside ``shared/`` (here and in CI).
SHARED_DATA = (Path(__file__).resolve().parents[3] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder; the test is skipped when it is absent."""
    if not (SHARED_DATA / "dicom-series").is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA
