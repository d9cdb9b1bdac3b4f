"""Reading one ready study: route it, rebuild the chosen series, run the routed packages.

No database and no files written here: the worker hands in the study's series (files in the
spool) and gets back typed results, or a :class:`StudyNotRead` naming why nothing was read.
Packages are loaded once per location and kept for every later study.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import torch
from pydicom.dataset import Dataset

from inference.packages import PackageError, load_findings_package, read_manifest
from inference.pipelines.findings import FindingsPipeline, SeriesReading
from inference.routing import RoutingTable, Rule, SeriesFacts, route
from inference.volume import rebuild_series

log = logging.getLogger(__name__)

# A registry reference ("registry:NAME" or "registry:NAME@VERSION") to a package folder.
RegistryResolver = Callable[[str], Path]


class StudyNotRead(Exception):
    """Nothing to read in the study (no rule matches); the message says why."""


@dataclass(frozen=True)
class SeriesInput:
    """One received series: its UID, files (absolute) and the AE titles that sent it."""

    series_instance_uid: str
    files: tuple[Path, ...]
    calling_ae_titles: tuple[str, ...]


@dataclass(frozen=True)
class StudyReading:
    """What the routed packages found in a study, with the headers the outputs copy."""

    rule: Rule
    readings: tuple[SeriesReading, ...]
    sources: tuple[Dataset, ...]  # headers (no pixels) of every instance of the read series
    package_hashes: tuple[str, ...]
    # Seconds per stage ("headers", "rebuild", "package load", "model NAME"), for benchmarks.
    timings: dict[str, float] = field(default_factory=dict)


def choose_device(setting: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise PackageError("worker.device is 'cuda' but no CUDA device is available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class StudyReader:
    """Routes studies and keeps every package it has loaded (thread-safe)."""

    def __init__(
        self,
        table: RoutingTable,
        device: torch.device,
        resolve_registry: RegistryResolver | None = None,
    ) -> None:
        self.table = table
        self.device = device
        self.resolve_registry = resolve_registry
        self._pipelines: dict[str, FindingsPipeline] = {}
        self._lock = threading.Lock()

    def pipeline(self, package: str) -> FindingsPipeline:
        """The loaded pipeline of a rule's package entry (loaded and hash-checked once)."""
        location = self.table.package_location(package)
        if isinstance(location, str):
            if self.resolve_registry is None:
                raise PackageError(f"{location}: no model registry to look it up in")
            location = self.resolve_registry(location)
        key = str(location)
        with self._lock:
            if key not in self._pipelines:
                task = read_manifest(location).task
                if task != "findings":
                    raise PackageError(
                        f"package {location} is a {task} package; this node runs findings "
                        "packages only so far: remove it from the routing rule"
                    )
                model = load_findings_package(location, device=self.device)
                self._pipelines[key] = FindingsPipeline(model)
                log.info(
                    "loaded %s %s (%s) on %s",
                    model.manifest.name,
                    model.manifest.version,
                    model.manifest.content_hash[:12],
                    self.device,
                )
            return self._pipelines[key]

    def read(self, series: Sequence[SeriesInput]) -> StudyReading:
        """Route the study and read the chosen series with every package of the rule.

        Raises
        ------
        StudyNotRead
            When no rule matches.
        VolumeError, PackageError
            When a chosen series cannot be rebuilt or a package cannot be loaded.
        """
        timings: dict[str, float] = {}
        # Routing needs one header per series; only the series read need all of theirs.
        facts = [_facts(s, pydicom.dcmread(s.files[0], stop_before_pixels=True)) for s in series]
        decision = route(self.table, facts)
        if decision.rule is None:
            raise StudyNotRead(decision.reason)
        started = time.perf_counter()
        pipelines = [self.pipeline(p) for p in decision.rule.packages]
        timings["package load"] = time.perf_counter() - started
        by_uid = {s.series_instance_uid: s for s in series}
        readings: list[SeriesReading] = []
        sources: list[Dataset] = []
        for chosen in decision.series:
            files = by_uid[chosen.series_instance_uid].files
            started = time.perf_counter()
            item = rebuild_series(files)
            timings["rebuild"] = timings.get("rebuild", 0.0) + time.perf_counter() - started
            started = time.perf_counter()
            headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
            timings["headers"] = timings.get("headers", 0.0) + time.perf_counter() - started
            window = _display_window(headers[0])
            for pipeline in pipelines:
                started = time.perf_counter()
                readings.append(pipeline.read(item, window))
                key = f"model {pipeline.algorithm.name}"
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - started
            sources.extend(headers)
        return StudyReading(
            decision.rule,
            tuple(readings),
            tuple(sources),
            tuple(p.algorithm.content_hash for p in pipelines),
            timings,
        )


def _facts(series: SeriesInput, first: Dataset) -> SeriesFacts:
    return SeriesFacts(
        series_instance_uid=series.series_instance_uid,
        modality=str(first.get("Modality", "")),
        body_part_examined=str(first.get("BodyPartExamined", "")),
        sop_class_uid=str(first.get("SOPClassUID", "")),
        series_description=str(first.get("SeriesDescription", "")),
        calling_ae_titles=series.calling_ae_titles,
        instances=len(series.files),  # the store keeps one row per SOP Instance UID
    )


def _display_window(ds: Dataset) -> tuple[float, float] | None:
    """The first WindowCenter/WindowWidth pair the modality stored, if any (CT display)."""
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:
        c = float(centre[0] if isinstance(centre, pydicom.multival.MultiValue) else centre)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError):
        return None
    return (c, w) if w > 1 else None
