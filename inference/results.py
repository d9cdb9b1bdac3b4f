"""Typed hand-offs from the pipelines to the DICOM encoders (DESIGN.md, "Hand-offs are typed").

A pipeline turns an :class:`~inference.volume.Image2D` or :class:`~inference.volume.Volume3D`
into :class:`Findings`, an :class:`Impression` or a :class:`LabelMap`; ``inference.dicom_out``
turns those into SR and SEG data sets. Each result names the algorithm (package) that made it,
so every output says which model and version produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.volume.types import Volume3D


@dataclass(frozen=True)
class AlgorithmIdentity:
    """The model package behind a result: shown in the SR and hashed into output UIDs."""

    name: str
    version: str
    content_hash: str  # the package's SHA-256 content hash
    task: str  # findings | impression | segmentation


@dataclass(frozen=True)
class FindingResult:
    """One catalogue finding read on one series.

    For a member of a mutually exclusive group (modality, plane, location) ``chosen`` says
    whether it is the group's most probable class; for a binary finding ``present`` is the
    probability compared with the catalogue's threshold.
    """

    name: str
    display: str
    probability: float
    group: str | None = None
    snomed: str | None = None
    chosen: bool = False
    present: bool | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Findings:
    """The findings one package read on one series of a study."""

    algorithm: AlgorithmIdentity
    series_instance_uid: str
    results: tuple[FindingResult, ...]
    # SOP Instance UIDs of the images the model looked at (the SR references them).
    read_sop_instance_uids: tuple[str, ...]
    # How the series was read, in words (e.g. "mean of 9 axial slices, CT window 40/400").
    method: str

    def chosen(self) -> tuple[FindingResult, ...]:
        """The group winners: what a report states as the series' modality, plane, region."""
        return tuple(r for r in self.results if r.group is not None and r.chosen)

    def binary(self) -> tuple[FindingResult, ...]:
        return tuple(r for r in self.results if r.group is None)


@dataclass(frozen=True)
class Impression:
    """An impression in words, with the algorithm that wrote it."""

    text: str
    algorithm: AlgorithmIdentity


@dataclass(frozen=True)
class Structure:
    """One segmented structure: its label value and its codes (SNOMED CT)."""

    label: int
    name: str  # e.g. TotalSegmentator's class name "liver"
    display: str  # e.g. "Liver"
    category_code: str  # SNOMED CT code of the segmented property category
    category_meaning: str
    type_code: str  # SNOMED CT code of the segmented property type
    type_meaning: str


@dataclass(frozen=True)
class LabelMap:
    """Integer labels on the source grid of ``volume`` (same shape as ``volume.array``)."""

    labels: npt.NDArray[np.integer]
    volume: Volume3D
    structures: tuple[Structure, ...]
    algorithm: AlgorithmIdentity

    def __post_init__(self) -> None:
        if self.labels.shape != self.volume.array.shape[:3]:
            raise ValueError(
                f"label map shape {self.labels.shape} differs from the volume's "
                f"{self.volume.array.shape[:3]}"
            )
