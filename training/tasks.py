"""Which code trains and evaluates each task's packages (findings, impression, segmentation).

``vlnode train`` reads a configuration's ``task`` and ``vlnode evaluate`` a package
manifest's ``task``, and both go through here. Each task names two things:

* a configuration loader ``load(file, raw) -> config``: ``raw`` is the parsed TOML; the
  config is a frozen dataclass with ``name``, ``task``, ``source``, ``data.archive``,
  ``optim.epochs`` and ``optim.seed`` (the CLI overrides the last three);
* a workflow module with ``train_and_package(config, models_root, run_dir, progress,
  evaluate, replicates) -> TrainOutcome``, ``evaluate_package(package, data, split,
  replicates, seed) -> dict`` (JSON-ready, with ``package`` and ``data`` entries) and
  ``result_lines(results) -> list[str]`` (what the commands print).

The modules are imported only when their task is used, so the findings commands do not
load the segmentation stack and the reverse.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class TrainOutcome:
    package: Path | None  # None on ranks other than 0
    name: str
    version: str
    content_hash: str
    results: dict[str, Any]


@dataclass(frozen=True)
class TaskModules:
    config_loader: str  # "module:function"
    workflow: str  # module


TASKS: dict[str, TaskModules] = {
    "findings": TaskModules("training.config:load_findings_config", "training.workflow"),
    "impression": TaskModules(
        "training.impression.config:load_impression_config", "training.impression.workflow"
    ),
    "segmentation": TaskModules(
        "training.segmentation.config:load_segmentation_config", "training.segmentation.workflow"
    ),
}


class UnknownTaskError(ValueError):
    """A configuration or package names a task this installation cannot train."""


def task_modules(task: str) -> TaskModules:
    try:
        return TASKS[task]
    except KeyError:
        raise UnknownTaskError(
            f"task = {task!r} is not one of {', '.join(sorted(TASKS))}"
        ) from None


def config_loader(task: str) -> Any:
    module, _, function = task_modules(task).config_loader.partition(":")
    return getattr(importlib.import_module(module), function)


def workflow(task: str) -> ModuleType:
    return importlib.import_module(task_modules(task).workflow)
