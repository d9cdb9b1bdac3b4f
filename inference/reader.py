"""Reading one ready study: route it, rebuild the chosen series, run the routed packages.

No database and no files written here: the worker hands in the study's series (files in the
spool) and gets back typed results, or a :class:`StudyNotRead` naming why nothing was read.
Packages are loaded once per location and kept for every later study. A package's manifest
names its task, and :data:`PIPELINES` the code that reads a series with it: findings give a
:class:`SeriesReading`, an impression package an :class:`Impression`, a segmentation package
a :class:`LabelMap`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pydicom
import torch
from pydicom.dataset import Dataset

from inference.packages import PackageError, read_manifest
from inference.pipelines.findings import SeriesReading
from inference.results import AlgorithmIdentity, Impression, LabelMap
from inference.routing import RoutingTable, Rule, SeriesFacts, route
from inference.volume import rebuild_series
from inference.volume.types import Image2D, Volume3D

log = logging.getLogger(__name__)

# A registry reference ("registry:NAME" or "registry:NAME@VERSION") to a package folder.
RegistryResolver = Callable[[str], Path]


# The module:function that loads a package of each task as a pipeline (imported on first use).
PIPELINES = {
    "findings": "inference.pipelines.findings:load_pipeline",
    "impression": "inference.pipelines.impression:load_pipeline",
    "segmentation": "inference.pipelines.segmentation:load_pipeline",
}

SeriesResult = SeriesReading | Impression | LabelMap


class Pipeline(Protocol):
    """A loaded package that reads one rebuilt series (``window``: the CT display window)."""

    @property
    def algorithm(self) -> AlgorithmIdentity: ...

    def read(
        self, item: Volume3D | Sequence[Image2D], window: tuple[float, float] | None
    ) -> SeriesResult: ...


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
    readings: tuple[SeriesReading, ...]  # findings, one per findings package and series
    sources: tuple[Dataset, ...]  # headers (no pixels) of every instance of the read series
    package_hashes: tuple[str, ...]
    impressions: tuple[Impression, ...] = ()
    label_maps: tuple[LabelMap, ...] = ()
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
        self._pipelines: dict[str, Pipeline] = {}
        self._lock = threading.Lock()

    def pipeline(self, package: str) -> Pipeline:
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
                if task not in PIPELINES:
                    raise PackageError(
                        f"package {location} is a {task!r} package; the node reads "
                        f"{', '.join(sorted(PIPELINES))} packages: remove it from the routing rule"
                    )
                module, _, function = PIPELINES[task].partition(":")
                load = getattr(importlib.import_module(module), function)
                pipeline: Pipeline = load(Path(location), self.device)
                self._pipelines[key] = pipeline
                algorithm = pipeline.algorithm
                log.info(
                    "loaded %s package %s %s (%s) on %s",
                    algorithm.task,
                    algorithm.name,
                    algorithm.version,
                    algorithm.content_hash[:12],
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
        impressions: list[Impression] = []
        label_maps: list[LabelMap] = []
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
                result = pipeline.read(item, window)
                if isinstance(result, SeriesReading):
                    readings.append(result)
                elif isinstance(result, Impression):
                    impressions.append(result)
                else:
                    label_maps.append(result)
                key = f"model {pipeline.algorithm.name}"
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - started
            sources.extend(headers)
        return StudyReading(
            decision.rule,
            tuple(readings),
            tuple(sources),
            tuple(p.algorithm.content_hash for p in pipelines),
            impressions=tuple(impressions),
            label_maps=tuple(label_maps),
            timings=timings,
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
