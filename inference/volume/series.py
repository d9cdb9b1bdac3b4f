"""Find the series in a folder and rebuild one series into images or a volume.

This is the public face of the package: :func:`find_series` reads headers only;
:func:`rebuild_series` reads every header, decides whether the series is a set of projection
images or a cross-sectional stack, checks the geometry, and only then reads the pixels.
Nothing here writes or deletes a file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydicom.uid import MediaStorageDirectoryStorage

from inference.volume.headers import InstanceHeader, read_headers, scan_series
from inference.volume.pixels import read_pixels, same_pixels, stored_bounds, stored_dtype
from inference.volume.planes import Plane, has_plane_geometry, planes_of
from inference.volume.projection import projection_images
from inference.volume.rescale import in_place_rescale, rescale
from inference.volume.stack import main_stack
from inference.volume.tilt import resample_tilted
from inference.volume.types import Image2D, SeriesIdentity, Volume3D, VolumeError

TiltPolicy = Literal["refuse", "resample"]

# Modalities whose images are projections, not planes of a volume (PS3.3 C.7.3.1.1.1).
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA", "RG", "DR"})


def find_series(folder: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Map each SeriesInstanceUID found under ``folder`` (recursively) to its files.

    Reads each file only up to its SeriesInstanceUID; files that are not DICOM are skipped,
    and so are DICOMDIR files. Files whose SeriesInstanceUID is empty or absent (some
    anonymisers blank it) are grouped under ``""``. Files are listed in path order.
    """
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    found: dict[str, list[Path]] = {}
    for path, (sop_class, series) in zip(paths, scan_series(paths), strict=True):
        if sop_class is None or sop_class == MediaStorageDirectoryStorage:
            continue  # not DICOM, or a DICOMDIR
        found.setdefault(series or "", []).append(path)
    return found


def rebuild_series(
    files: Sequence[str | os.PathLike[str]],
    *,
    tilt: TiltPolicy = "refuse",
    workers: int | None = None,
) -> Volume3D | tuple[Image2D, ...]:
    """Rebuild the instances of one series.

    Parameters
    ----------
    files
        The series' files, in any order.
    tilt
        What to do with a gantry-tilted stack: ``"refuse"`` raises :class:`VolumeError`,
        ``"resample"`` interpolates it onto the orthogonal grid of its planes.
    workers
        Processes for decoding compressed pixel data; default: the number of CPUs.

    Returns
    -------
    One :class:`Image2D` per frame for projection images (CR, DX, MG, XA, secondary captures
    without plane geometry); the main stack as a :class:`Volume3D` otherwise.

    Raises
    ------
    VolumeError
        With the series' UID and the reason, whenever the result would not be trustworthy.
    """
    if tilt not in ("refuse", "resample"):
        raise ValueError(f"tilt policy must be 'refuse' or 'resample', not {tilt!r}")
    if not files:
        raise VolumeError("no files given for the series")
    instances = _read_headers([Path(f) for f in files])
    identity = _identity(instances)
    name = identity.series_instance_uid or f"(no SeriesInstanceUID) in {instances[0].path.parent}"
    geometric = [i for i in instances if has_plane_geometry(i)]
    if identity.modality in PROJECTION_MODALITIES or not geometric:
        return projection_images(instances, identity)

    planes: list[Plane] = [plane for i in geometric for plane in planes_of(i)]
    stack = main_stack(planes, name, same_pixels)
    aside = len(instances) - len(geometric)
    others = stack.others + (
        (f"{aside} instance{'s' if aside > 1 else ''} without plane geometry",) if aside else ()
    )
    if stack.tilt_degrees and tilt == "refuse":
        raise VolumeError(
            f"series {name}: gantry tilt of {stack.tilt_degrees:.1f} degrees "
            "(slices are not stacked along their normal); set the tilt policy to 'resample' "
            "to interpolate onto an orthogonal grid"
        )
    values = _read_values(stack.planes, name, workers)
    affine = stack.affine
    if stack.tilt_degrees:
        if values.ndim != 3:
            raise VolumeError(
                f"series {name}: gantry tilt of {stack.tilt_degrees:.1f} degrees in a colour "
                "stack: not resampled"
            )
        values, affine = resample_tilted(values, affine)
    multiframe = any(p.instance.number_of_frames > 1 for p in stack.planes)
    return Volume3D(
        array=values,
        affine=affine,
        source_sop_instance_uids=tuple(p.instance.sop_instance_uid for p in stack.planes),
        series=identity,
        source_frame_numbers=tuple(p.frame_number for p in stack.planes) if multiframe else None,
        other_stacks=others,
    )


def _read_values(
    planes: Sequence[Plane], name: str, workers: int | None
) -> npt.NDArray[np.integer] | npt.NDArray[np.floating]:
    """Stored values read and rescaled: slice by slice as they are read when all slices are
    uncompressed and little-endian and the rescale fits in place, else in one pass after."""
    slopes = [p.rescale_slope for p in planes]
    intercepts = [p.rescale_intercept for p in planes]
    first = planes[0].instance
    bounds = stored_bounds(first)
    fused = in_place_rescale(stored_dtype(first), slopes, intercepts, bounds)
    if fused is not None and all(p.instance.native and not p.instance.big_endian for p in planes):
        return fused.result(read_pixels(planes, name, workers=workers, per_slice=fused.apply))
    stored = read_pixels(planes, name, workers=workers)
    return rescale(stored, slopes, intercepts, bounds=bounds)


def _read_headers(paths: Sequence[Path]) -> list[InstanceHeader]:
    instances = read_headers(paths)
    series = {i.text("SeriesInstanceUID") for i in instances}
    if len(series) > 1:
        raise VolumeError(
            f"the files belong to {len(series)} series ({', '.join(sorted(series))}), not one"
        )
    seen: dict[str, Path] = {}
    unique = []
    for instance in instances:
        # The same instance received twice (a re-send, another transfer syntax) counts once.
        uid = instance.sop_instance_uid or str(instance.path)
        if uid in seen:
            continue
        seen[uid] = instance.path
        unique.append(instance)
    return unique


def _identity(instances: Sequence[InstanceHeader]) -> SeriesIdentity:
    first = instances[0]
    number = first.number("SeriesNumber")
    return SeriesIdentity(
        study_instance_uid=first.text("StudyInstanceUID"),
        series_instance_uid=first.text("SeriesInstanceUID"),
        modality=first.text("Modality").upper(),
        frame_of_reference_uid=first.text("FrameOfReferenceUID") or None,
        series_number=int(number) if number is not None else None,
        series_description=first.text("SeriesDescription") or None,
    )
