"""Routing rules: which model packages read which series of a ready study.

Rules are data (``conf/routing.toml``), tried in file order; the first rule with a suitable
series decides for the study. A rule matches a series on any of Modality, BodyPartExamined,
SOP Class UID, a SeriesDescription pattern and the calling AE title (an empty criterion
matches anything), and reads either the largest suitable series or every one. A study that no
rule matches is recorded ``skipped`` with the reason. Packages are named by a folder
(relative to the rules file) or as ``registry:NAME`` / ``registry:NAME@VERSION`` (the active
version, or that version, of the node's model registry).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inference.toml_file import read_toml

# Storage classes the node never reads: its own kinds of output and other non-images.
NEVER_READ_SOP_CLASS_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.66",  # segmentation, registration, fiducials, ...
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.481.",  # RT plans, structures, doses
)


class RoutingError(ValueError):
    """The routing file is unreadable or a rule is wrong; the message names the rule."""


@dataclass(frozen=True)
class SeriesFacts:
    """What a rule can look at in one received series (read from its first header)."""

    series_instance_uid: str
    modality: str
    body_part_examined: str
    sop_class_uid: str
    series_description: str
    calling_ae_titles: tuple[str, ...]
    instances: int


@dataclass(frozen=True)
class Rule:
    name: str
    packages: tuple[str, ...]
    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()
    series_description: re.Pattern[str] | None = None
    calling_ae: tuple[str, ...] = ()
    series: Literal["largest", "all"] = "largest"
    destinations: tuple[str, ...] = ()  # empty: every configured destination
    min_instances: int = 1

    def matches(self, facts: SeriesFacts) -> bool:
        if facts.sop_class_uid.startswith(NEVER_READ_SOP_CLASS_PREFIXES):
            return False
        if self.modality and facts.modality.upper() not in self.modality:
            return False
        if self.body_part and facts.body_part_examined.upper() not in self.body_part:
            return False
        if self.sop_class and facts.sop_class_uid not in self.sop_class:
            return False
        if self.series_description and not self.series_description.search(facts.series_description):
            return False
        if self.calling_ae and not set(self.calling_ae) & set(facts.calling_ae_titles):
            return False
        return facts.instances >= self.min_instances


@dataclass(frozen=True)
class RoutingTable:
    rules: tuple[Rule, ...]
    folder: Path  # package folders are relative to the rules file

    def package_location(self, package: str) -> str | Path:
        """A registry reference as it is, or a package folder made absolute."""
        if package.startswith("registry:"):
            return package
        path = Path(package)
        return path if path.is_absolute() else (self.folder / path).resolve()


@dataclass(frozen=True)
class RoutingDecision:
    """What to do with a study: the rule, the series to read, or why nothing is read."""

    rule: Rule | None
    series: tuple[SeriesFacts, ...]
    reason: str


def route(table: RoutingTable, series: Sequence[SeriesFacts]) -> RoutingDecision:
    """The first rule with a suitable series decides; none: a decision with the reason."""
    readable = [s for s in series if not s.sop_class_uid.startswith(NEVER_READ_SOP_CLASS_PREFIXES)]
    if not readable:
        return RoutingDecision(None, (), "the study holds no image series (only SR, SEG, ...)")
    for rule in table.rules:
        suitable = [s for s in readable if rule.matches(s)]
        if not suitable:
            continue
        if rule.series == "largest":
            suitable = [max(suitable, key=lambda s: (s.instances, s.series_instance_uid))]
        return RoutingDecision(rule, tuple(suitable), f"rule {rule.name!r}")
    seen = ", ".join(
        sorted({f"{s.modality or '?'}/{s.body_part_examined or '-'}" for s in readable})
    )
    return RoutingDecision(
        None,
        (),
        f"no routing rule matches its series (modality/body part: {seen}); add a rule to "
        "the routing file if this kind of study should be read",
    )


def _strings(raw: dict[str, Any], key: str, where: str, upper: bool = False) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RoutingError(f"{where}: {key} must be a string or a list of non-empty strings")
    return tuple(v.upper() if upper else v for v in value)


_RULE_KEYS = {
    "name",
    "packages",
    "modality",
    "body_part",
    "sop_class",
    "series_description",
    "calling_ae",
    "series",
    "destinations",
    "min_instances",
}


def load_routing(path: str | Path) -> RoutingTable:
    """Read and check the rules; :class:`RoutingError` names the rule and key that are wrong."""
    file = Path(path)
    raw = read_toml(file, "routing file", RoutingError)
    entries = raw.get("rule", [])
    if not isinstance(entries, list):
        raise RoutingError(f"{file}: rules are [[rule]] tables")
    rules: list[Rule] = []
    for i, entry in enumerate(entries, start=1):
        name = entry.get("name", f"rule {i}")
        where = f"{file}: rule {i} ({name!r})"
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise RoutingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        packages = _strings(entry, "packages", where)
        if not packages:
            raise RoutingError(f"{where}: packages must name at least one model package")
        pattern = entry.get("series_description")
        compiled = None
        if pattern is not None:
            try:
                compiled = re.compile(str(pattern), re.IGNORECASE)
            except re.error as exc:
                raise RoutingError(f"{where}: series_description {pattern!r}: {exc}") from exc
        which = entry.get("series", "largest")
        if which not in ("largest", "all"):
            raise RoutingError(f"{where}: series must be 'largest' or 'all', not {which!r}")
        minimum = entry.get("min_instances", 1)
        if not isinstance(minimum, int) or minimum < 1:
            raise RoutingError(f"{where}: min_instances must be a positive integer")
        rules.append(
            Rule(
                name=str(name),
                packages=packages,
                modality=_strings(entry, "modality", where, upper=True),
                body_part=_strings(entry, "body_part", where, upper=True),
                sop_class=_strings(entry, "sop_class", where),
                series_description=compiled,
                calling_ae=_strings(entry, "calling_ae", where),
                series=which,
                destinations=_strings(entry, "destinations", where),
                min_instances=minimum,
            )
        )
    table = RoutingTable(tuple(rules), file.resolve().parent)
    for rule in table.rules:
        for package in rule.packages:
            location = table.package_location(package)
            if isinstance(location, Path) and not location.is_dir():
                raise RoutingError(
                    f"{file}: rule {rule.name!r}: package folder {location} does not exist "
                    "(give a folder relative to the routing file, or registry:NAME)"
                )
    return table
