"""Entity views of report text: the radiology terms a text names, as a short text of their own.

KAD's idea on what this machine has: besides the whole report, the image is paired with the
entities extracted from its free text, so that a term such as "CT" or "sagittal" is not
diluted among the forty other words of a caption. The extraction is a lexicon lookup (a
TOML file of entities, each with the words that name it); it reads free text only, never
an archive's label columns.

A lexicon term with a capital letter (CT, MRI, T2) matches case-sensitively, as a whole
word: "CT" is the modality, "ct" inside a word or "Mr." is not. An all-lowercase term
(sagittal, computed tomography) matches in any case. Each entity is named once, in the
order the text first mentions it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from inference.toml_file import read_toml


class LexiconError(ValueError):
    """An entity lexicon file is unreadable or malformed (the message names the file)."""


@dataclass(frozen=True)
class Entity:
    name: str  # the words the entity view uses for it
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class EntityLexicon:
    entities: tuple[Entity, ...]
    source: Path

    def find(self, text: str) -> list[str]:
        """The names of the entities the text mentions, in order of first mention."""
        hits: list[tuple[int, int, str]] = []
        for order, entity in enumerate(self.entities):
            match = entity.pattern.search(text)
            if match:
                hits.append((match.start(), order, entity.name))
        return [name for _, _, name in sorted(hits)]

    def view(self, text: str) -> str:
        """The entity view of a text ("" when it names none): "CT, axial, neck"."""
        return ", ".join(self.find(text))


def _term_pattern(term: str) -> str:
    words = r"\s+".join(re.escape(w) for w in term.split())
    return rf"(?<![\w-]){words}(?![\w-])"


def load_lexicon(path: str | Path) -> EntityLexicon:
    """Read a lexicon: ``[[entity]]`` tables with ``name`` and ``terms`` (a list of words)."""
    file = Path(path)
    raw = read_toml(file, "entity lexicon", LexiconError)
    tables = raw.get("entity")
    if not isinstance(tables, list) or not tables:
        raise LexiconError(f"{file}: no [[entity]] tables; each needs a name and terms")
    entities: list[Entity] = []
    for i, table in enumerate(tables, 1):
        name, terms = table.get("name"), table.get("terms")
        if not isinstance(name, str) or not name.strip():
            raise LexiconError(f"{file}: entity {i} has no name")
        if (
            not isinstance(terms, list)
            or not terms
            or not all(isinstance(t, str) and t.strip() for t in terms)
        ):
            raise LexiconError(f"{file}: entity {name!r}: terms must be a list of words")
        sensitive = [_term_pattern(t) for t in terms if t != t.lower()]
        insensitive = [_term_pattern(t) for t in terms if t == t.lower()]
        parts = [f"(?:{'|'.join(sensitive)})"] if sensitive else []
        if insensitive:
            parts.append(f"(?i:{'|'.join(insensitive)})")
        entities.append(Entity(name=name.strip(), pattern=re.compile("|".join(parts))))
    return EntityLexicon(entities=tuple(entities), source=file)
