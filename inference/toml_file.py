"""Reading a TOML file of the project's (catalogue, lexicon, training configuration)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def read_toml(file: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The file's tables, or ``error`` naming what the file was meant to be, and its path."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {what} {str(file)!r}: {exc}") from exc
