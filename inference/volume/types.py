"""Typed hand-offs of the volume rebuild: what every later stage receives.

Geometry conventions (fixed here so that SEG encoding can point back at source slices):

* ``Volume3D.array`` is indexed ``[slice, row, column]``.
* ``Volume3D.affine`` maps an index vector in that same order, ``(slice, row, column, 1)``,
  to patient coordinates in millimetres in DICOM's LPS frame. Its columns are the real steps
  between voxel centres: the slice column may lean up to 3 degrees off the slice normal (a
  slightly sheared stack, described exactly); steeper gantry tilts are refused or resampled.
* ``Image2D.pixels`` is indexed ``[row, column]`` (``[row, column, sample]`` for RGB), and
  ``Volume3D.array`` likewise gains a last ``sample`` axis for RGB series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


class VolumeError(ValueError):
    """A series cannot be rebuilt into a trustworthy image or volume.

    The message names the series and the reason, in words a person can act on.
    """


@dataclass(frozen=True)
class SeriesIdentity:
    """The identifying attributes of the source series (no patient data)."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    frame_of_reference_uid: str | None = None
    series_number: int | None = None
    series_description: str | None = None


@dataclass(frozen=True)
class Image2D:
    """One projection image (or one frame of a multi-frame projection instance)."""

    pixels: npt.NDArray[np.floating] | npt.NDArray[np.integer]
    pixel_spacing: tuple[float, float] | None  # (row, column) in mm; None when unknown
    spacing_source: str  # "PixelSpacing", "ImagerPixelSpacing", ... or "none"
    source_sop_instance_uid: str
    frame_number: int  # 1-based; 1 for single-frame instances
    series: SeriesIdentity
    photometric_interpretation: str = "MONOCHROME2"  # after MONOCHROME1 inversion
    # True: a VOI LUT or window was applied and grey values lie in [0, 1]; False: modality units.
    voi_applied: bool = False

    @property
    def is_rgb(self) -> bool:
        return self.pixels.ndim == 3


@dataclass(frozen=True)
class Volume3D:
    """One cross-sectional stack on a regular grid, with its geometry and sources."""

    array: npt.NDArray[np.floating] | npt.NDArray[np.integer]
    affine: npt.NDArray[np.float64]  # 4x4, (slice, row, column, 1) -> LPS mm
    source_sop_instance_uids: tuple[str, ...]  # one per slice, in array order
    series: SeriesIdentity
    source_frame_numbers: tuple[int, ...] | None = None  # for enhanced multi-frame sources
    # Stacks of the same series left aside (localizers, other echoes), one line each.
    other_stacks: tuple[str, ...] = ()

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along (slice, row, column) in mm."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    def voxel_to_world(self, indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """LPS coordinates of ``(..., 3)`` index triples in ``(slice, row, column)`` order."""
        idx = np.asarray(indices, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]
