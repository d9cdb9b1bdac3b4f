"""The label catalogue of a segmentation model: label value -> :class:`Structure` with codes.

A catalogue is a TOML file (``conf/segmentation/*.toml``) with one ``[[structure]]`` table per
label; see ``conf/segmentation/totalsegmentator-v2.toml``. It is data, read and checked here:
a bad or incomplete entry is refused with a message naming it.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from inference.results import Structure

_TEXT_FIELDS = (
    "name",
    "display",
    "category_code",
    "category_meaning",
    "type_code",
    "type_meaning",
)
# SNOMED CT identifiers are 6 to 18 digits.
_SCTID = re.compile(r"^[0-9]{6,18}$")


class CatalogueError(ValueError):
    """A label catalogue file that cannot be used; the message names the file and the entry."""


def load_structures(path: str | os.PathLike[str]) -> dict[int, Structure]:
    """Read a label catalogue.

    Returns
    -------
    The structures by label value, in ascending label order.

    Raises
    ------
    CatalogueError
        When the file is missing or not TOML, or an entry lacks a field, has a label that is
        not a positive integer, a repeated label or name, or a code that is not a SNOMED CT id.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"label catalogue {file}: cannot be read: {exc}") from exc
    entries = data.get("structure")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"label catalogue {file}: no [[structure]] entries")
    structures: dict[int, Structure] = {}
    names: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        structure = _structure(file, index, entry)
        if structure.label in structures:
            raise CatalogueError(
                f"label catalogue {file}: entry {index} ({structure.name}) repeats "
                f"label {structure.label}"
            )
        if structure.name in names:
            raise CatalogueError(
                f"label catalogue {file}: entry {index} repeats the name {structure.name!r}"
            )
        structures[structure.label] = structure
        names.add(structure.name)
    return dict(sorted(structures.items()))


def _structure(file: Path, index: int, entry: Any) -> Structure:
    if not isinstance(entry, dict):
        raise CatalogueError(f"label catalogue {file}: entry {index} is not a table")
    where = f"label catalogue {file}: entry {index} ({entry.get('name', 'no name')})"
    label = entry.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or label < 1:
        raise CatalogueError(f"{where}: label must be a positive integer, got {label!r}")
    values: dict[str, str] = {}
    for field in _TEXT_FIELDS:
        value = entry.get(field)
        if not isinstance(value, str) or not value.strip():
            raise CatalogueError(f"{where}: missing or empty {field!r}")
        values[field] = value.strip()
    for field in ("category_code", "type_code"):
        if not _SCTID.match(values[field]):
            raise CatalogueError(
                f"{where}: {field} {values[field]!r} is not a SNOMED CT identifier"
            )
    unknown = set(entry) - {"label", *_TEXT_FIELDS}
    if unknown:
        raise CatalogueError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    return Structure(label=label, **values)
