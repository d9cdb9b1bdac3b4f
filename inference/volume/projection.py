"""Projection images (CR, DX, MG, XA, secondary captures of X-rays) as :class:`Image2D`.

Grey images go through the standard display pipeline, in this order (PS3.4 N.2.1):
modality LUT (rescale or LUT sequence), VOI (VOI LUT sequence, else window centre/width,
scaled to ``[0, 1]``), then MONOCHROME1 is inverted so that bright always means dense.
Colour images are returned as decoded (RGB, ``uint8``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.utils import pixel_array

from inference.volume.headers import InstanceHeader
from inference.volume.types import Image2D, SeriesIdentity, VolumeError

# In order of preference: calibrated at the patient, then at the detector, then scanned film.
_SPACING_SOURCES = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def projection_images(
    instances: Sequence[InstanceHeader], series: SeriesIdentity
) -> tuple[Image2D, ...]:
    """One :class:`Image2D` per frame of every instance, in InstanceNumber order.

    Raises
    ------
    VolumeError
        When an instance cannot be decoded or its LUTs cannot be applied.
    """
    images: list[Image2D] = []
    ordered = sorted(
        instances,
        key=lambda i: (i.integer("InstanceNumber"), i.sop_instance_uid),
    )
    for instance in ordered:
        ds = instance.dataset
        try:
            frames = pixel_array(str(instance.path))
        except Exception as exc:  # any decoder failure means this instance is unusable
            raise VolumeError(
                f"series {series.series_instance_uid}: cannot decode {instance.path.name}: {exc}"
            ) from exc
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = frames.reshape(-1, *frames.shape[-(3 if samples > 1 else 2) :])
        spacing, source = _spacing(ds)
        voi = False
        values: npt.NDArray[np.integer] | npt.NDArray[np.floating]
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            values, samples = _palette_to_rgb(frames, ds, series.series_instance_uid), 3
        elif samples == 1:
            values, voi = display_values(frames, ds, series.series_instance_uid)
        else:
            values = frames
        images.extend(
            Image2D(
                pixels=values[index],
                pixel_spacing=spacing,
                spacing_source=source,
                source_sop_instance_uid=instance.sop_instance_uid,
                frame_number=index + 1,
                series=series,
                photometric_interpretation="MONOCHROME2" if samples == 1 else "RGB",
                voi_applied=voi,
            )
            for index in range(len(values))
        )
    return tuple(images)


def _palette_to_rgb(
    indices: npt.NDArray[np.integer], ds: Dataset, series: str
) -> npt.NDArray[np.integer]:
    """PALETTE COLOR indices through the palette's lookup tables to RGB (PS3.3 C.7.6.3)."""
    try:
        return np.asarray(apply_color_lut(indices, ds))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise VolumeError(f"series {series}: cannot apply the palette: {exc}") from exc


def _spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    for keyword in _SPACING_SOURCES:
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return (float(value[0]), float(value[1])), keyword
    return None, "none"


def display_values(
    stored: npt.NDArray[np.integer], ds: Dataset, series: str
) -> tuple[npt.NDArray[np.float32], bool]:
    """Modality LUT, VOI and MONOCHROME1 inversion of grey stored values.

    Returns the ``float32`` values and whether a VOI was applied (values then lie in
    ``[0, 1]``; otherwise they are in modality units, e.g. the detector's).
    """
    try:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        low, high = _modality_range(ds)
        voi = True
        if ds.get("VOILUTSequence"):
            values, low, high = _voi_lut(values, ds)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values, low, high = _window(values, ds), 0.0, 1.0
        else:
            voi = False
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
        raise VolumeError(f"series {series}: cannot apply the modality or VOI LUT: {exc}") from exc
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        # Reflect within the output range, so that bright means dense as in MONOCHROME2.
        values = np.float32(low + high) - values
    return values, voi


def _modality_range(ds: Dataset) -> tuple[float, float]:
    """The smallest and largest value the modality LUT can produce from stored values."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lowest, highest = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lowest, highest = 0, 2**bits - 1
    candidates = np.arange(lowest, highest + 1) if bits <= 16 else np.array([lowest, highest])
    mapped = np.asarray(apply_modality_lut(candidates, ds), dtype=np.float64)
    return float(mapped.min()), float(mapped.max())


def _voi_lut(
    values: npt.NDArray[np.float32], ds: Dataset
) -> tuple[npt.NDArray[np.float32], float, float]:
    depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    mapped = apply_voi(np.rint(values).astype(np.int64), ds)
    return (mapped.astype(np.float32) / np.float32(2**depth - 1)), 0.0, 1.0


def _first(value: object) -> float:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def _window(values: npt.NDArray[np.float32], ds: Dataset) -> npt.NDArray[np.float32]:
    """Window centre/width to ``[0, 1]`` (PS3.3 C.11.2.1.2, LINEAR, LINEAR_EXACT, SIGMOID)."""
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width {width} must be positive")
        sigmoid = 1 / (1 + np.exp(-4 * (values - center) / width))
        return np.asarray(sigmoid, dtype=np.float32)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"window width {width} must be positive")
        scaled = (values - center) / width + 0.5
    else:
        if width < 1:
            raise ValueError(f"window width {width} must be at least 1 for LINEAR")
        scaled = (values - (center - 0.5)) / max(width - 1, 1e-6) + 0.5
    return np.asarray(np.clip(scaled, 0, 1), dtype=np.float32)
