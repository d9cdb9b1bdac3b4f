"""The finding catalogue: what the findings model reports, and the prompts that score it.

A catalogue is a TOML file (``conf/findings/*.toml``), copied into every model package::

    name = "medpix"
    [[finding]]
    name = "ct"                 # unique key
    display = "CT"              # what a report shows
    group = "modality"          # optional: members of a group are mutually exclusive
    snomed = "77477000"         # SNOMED CT code, for the SR
    positive = ["a CT scan", "computed tomography image"]
    negative = []               # binary findings: "no pleural effusion", ...
    label = { column = "type", value = "CT" }   # evaluation only: how the archive labels it

Findings in a group are scored by a softmax over the group's classes; a finding without a
group by a softmax of its positive against its negative prompts (CheXzero).

A binary finding is reported present when its probability reaches its ``threshold``, an
optional key of its entry (``threshold = 0.42``; default 0.5): a number strictly between 0 and
1, chosen for the model the catalogue ships with (the catalogue's comments say how). A group's
findings are compared with each other, not with a threshold, so a ``threshold`` on a group's
member is an error.

Prompt templates (open_clip's class name × template ensemble) multiply the prompts: with ::

    [templates]
    plane = ["{} CT of the abdomen", "{} MRI of the brain"]

every finding of the ``plane`` group gets each template filled with each of its ``terms``
(default: its ``display`` name, lower-cased) added to its ``positive`` prompts. Averaging over
templates that vary the other attributes (modality, region) leaves the attribute of the group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.toml_file import read_toml


class CatalogueError(ValueError):
    """The catalogue file is unreadable or a finding entry is incomplete."""


@dataclass(frozen=True)
class Finding:
    name: str
    display: str
    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()
    group: str | None = None
    snomed: str | None = None
    label_column: str | None = None
    label_values: tuple[str, ...] = ()
    threshold: float = 0.5


@dataclass(frozen=True)
class FindingCatalogue:
    name: str
    findings: tuple[Finding, ...]

    def groups(self) -> dict[str, tuple[Finding, ...]]:
        out: dict[str, list[Finding]] = {}
        for f in self.findings:
            if f.group:
                out.setdefault(f.group, []).append(f)
        return {k: tuple(v) for k, v in out.items()}

    def binary(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.group)

    def find(self, name: str) -> Finding:
        for f in self.findings:
            if f.name == name:
                return f
        raise KeyError(name)


def load_catalogue(path: str | Path) -> FindingCatalogue:
    """Read and check a catalogue; :class:`CatalogueError` names the entry that is wrong."""
    file = Path(path)
    raw = read_toml(file, "finding catalogue", CatalogueError)
    templates = raw.get("templates", {})
    if not isinstance(templates, dict) or not all(
        isinstance(v, list) and all(isinstance(t, str) and "{}" in t for t in v)
        for v in templates.values()
    ):
        raise CatalogueError(f"{file}: [templates] maps a group to a list of strings with {{}}")
    entries = raw.get("finding", [])
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"{file}: no [[finding]] entries")
    findings: list[Finding] = []
    for i, entry in enumerate(entries, start=1):
        name = entry.get("name")
        where = f"{file}: finding {i} ({name!r})"
        if not isinstance(name, str) or not name:
            raise CatalogueError(f"{where}: name is required")
        positive = entry.get("positive", [])
        negative = entry.get("negative", [])
        if not isinstance(positive, list) or not all(
            isinstance(p, str) and p.strip() for p in positive
        ):
            raise CatalogueError(f"{where}: positive must be a list of non-empty prompts")
        if not isinstance(negative, list) or not all(isinstance(p, str) for p in negative):
            raise CatalogueError(f"{where}: negative must be a list of prompts")
        group = entry.get("group")
        terms = entry.get("terms", [str(entry.get("display", name)).lower()])
        if not isinstance(terms, list) or not all(isinstance(t, str) and t for t in terms):
            raise CatalogueError(f"{where}: terms must be a list of words")
        if group in templates:
            filled = [t.format(term) for t in templates[group] for term in terms]
            positive = list(dict.fromkeys([*positive, *filled]))
        if not positive:
            raise CatalogueError(f"{where}: positive needs at least one non-empty prompt")
        if group is None and not negative:
            raise CatalogueError(f"{where}: a finding outside a group needs negative prompts")
        threshold = _threshold(entry, group, where)
        label = entry.get("label", {})
        values = label.get("value", ())
        values = (values,) if isinstance(values, str) else tuple(values)
        findings.append(
            Finding(
                name=name,
                display=str(entry.get("display", name)),
                positive=tuple(positive),
                negative=tuple(negative),
                group=str(group) if group else None,
                snomed=str(entry["snomed"]) if entry.get("snomed") else None,
                label_column=label.get("column"),
                label_values=values,
                threshold=threshold,
            )
        )
    names = [f.name for f in findings]
    if len(set(names)) != len(names):
        raise CatalogueError(f"{file}: finding names must be unique")
    for group, members in FindingCatalogue("", tuple(findings)).groups().items():
        if len(members) < 2:
            raise CatalogueError(f"{file}: group {group!r} needs at least two findings")
    return FindingCatalogue(name=str(raw.get("name", file.stem)), findings=tuple(findings))


def _threshold(entry: dict[str, object], group: object, where: str) -> float:
    """The binary decision threshold of an entry: 0.5 unless given, in (0, 1) when given."""
    if "threshold" not in entry:
        return 0.5
    value = entry["threshold"]
    if group is not None:
        raise CatalogueError(f"{where}: threshold is for binary findings, not a group's member")
    # bool is an int to Python, and TOML's nan compares false with both bounds.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise CatalogueError(f"{where}: threshold must be a number strictly between 0 and 1")
    return float(value)
