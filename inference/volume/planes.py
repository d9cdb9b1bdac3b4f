"""The plane of every frame: position, orientation, spacing and rescale, classic or enhanced.

A classic instance (one image per file) carries its plane in top-level attributes; an
enhanced multi-frame instance carries it per frame in the Per-frame and Shared Functional
Groups (PS3.3 C.7.6.16). Both become the same :class:`Plane`, so the stack logic never asks
which kind of instance a slice came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from inference.volume.headers import InstanceHeader
from inference.volume.types import VolumeError


@dataclass(frozen=True)
class Plane:
    """One frame of one instance, placed in patient space (LPS mm)."""

    instance: InstanceHeader
    frame_index: int  # 0-based within the instance
    position: tuple[float, ...]  # ImagePositionPatient (3): centre of the first pixel
    orientation: tuple[float, ...]  # ImageOrientationPatient (6): row, then column cosines
    pixel_spacing: tuple[float, ...]  # PixelSpacing (2): between rows, between columns, mm
    slice_thickness: float | None
    rescale_slope: float
    rescale_intercept: float
    image_type: tuple[str, ...]
    echo_number: int | None
    # What else tells apart stacks that share one geometry: ("time", 2.0), ("b", 1000.0), ...
    variant: tuple[tuple[str, float], ...] = ()

    @property
    def frame_number(self) -> int:
        return self.frame_index + 1


def _item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _group_value(groups: Sequence[Dataset | None], sequence: str, keyword: str) -> object:
    """The first value of ``keyword`` inside ``sequence`` among functional groups, or None."""
    for group in groups:
        if group is None:
            continue
        item = _item(group, sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _number(value: object, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    return float(value)  # type: ignore[arg-type]


def _first_present(*values: object) -> object:
    return next((v for v in values if v is not None and v != ""), None)


def _floats(value: object, count: int, what: str, instance: InstanceHeader) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{instance.path.name}: unreadable {what} {value!r}") from exc
    if len(numbers) != count:
        raise VolumeError(f"{instance.path.name}: {what} has {len(numbers)} values, not {count}")
    return numbers


def has_plane_geometry(instance: InstanceHeader) -> bool:
    """Whether the instance places its frames in patient space at all."""
    if instance.has("ImagePositionPatient") and instance.has("ImageOrientationPatient"):
        return True
    if not instance.may_have_functional_groups:
        return False
    ds = instance.dataset
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    first = per_frame[0] if per_frame else None
    return (
        _group_value([first, shared], "PlanePositionSequence", "ImagePositionPatient") is not None
    )


def planes_of(instance: InstanceHeader) -> list[Plane]:
    """Every frame of ``instance`` as a :class:`Plane`.

    Raises
    ------
    VolumeError
        When a frame's position, orientation or pixel spacing is missing or malformed.
    """
    kind = instance.text("ImageType")
    image_type = tuple(v.upper() for v in kind.split("\\")[:3]) if kind else ()
    echoes = instance.numbers("EchoNumbers")
    echo_number = int(echoes[0]) if echoes else None
    if not instance.may_have_functional_groups:
        return [_classic_plane(instance, image_type, echo_number)]
    ds = instance.dataset
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return [_classic_plane(instance, image_type, echo_number)]
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    if len(per_frame) != instance.number_of_frames:
        raise VolumeError(
            f"{instance.path.name}: {len(per_frame)} per-frame functional groups "
            f"for {instance.number_of_frames} frames"
        )
    planes = []
    for index, frame in enumerate(per_frame):
        groups = [frame, shared]
        # Standard places first, then where some writers put them instead: straight in the
        # frame's or the shared item, or at the top level.
        position = _group_value(groups, "PlanePositionSequence", "ImagePositionPatient")
        position = _first_present(position, frame.get("ImagePositionPatient"))
        orientation = _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        orientation = _first_present(
            orientation,
            frame.get("ImageOrientationPatient"),
            shared.get("ImageOrientationPatient") if shared else None,
            ds.get("ImageOrientationPatient"),
        )
        spacing = _group_value(groups, "PixelMeasuresSequence", "PixelSpacing")
        spacing = _first_present(spacing, ds.get("PixelSpacing"))
        if position is None or orientation is None or spacing is None:
            missing = [
                name
                for name, value in (
                    ("ImagePositionPatient", position),
                    ("ImageOrientationPatient", orientation),
                    ("PixelSpacing", spacing),
                )
                if value is None
            ]
            raise VolumeError(
                f"{instance.path.name}: frame {index + 1} has no {', '.join(missing)}"
            )
        thickness = _group_value(groups, "PixelMeasuresSequence", "SliceThickness")
        slope = _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
        frame_echo = _group_value(groups, "MREchoSequence", "EffectiveEchoTime")
        planes.append(
            Plane(
                instance=instance,
                frame_index=index,
                position=_floats(position, 3, "ImagePositionPatient", instance),
                orientation=_floats(orientation, 6, "ImageOrientationPatient", instance),
                pixel_spacing=_floats(spacing, 2, "PixelSpacing", instance),
                slice_thickness=_number(thickness, None),
                rescale_slope=_number(slope, 1.0) or 1.0,
                rescale_intercept=_number(intercept, 0.0) or 0.0,
                image_type=image_type,
                # Echoes of an enhanced MR are told apart by their effective echo time.
                echo_number=round(1000 * (_number(frame_echo, 0.0) or 0.0)) or echo_number,
                variant=_variant(
                    time=_number(
                        _group_value(groups, "FrameContentSequence", "TemporalPositionIndex"), None
                    ),
                    b=_number(_group_value(groups, "MRDiffusionSequence", "DiffusionBValue"), None),
                    stack=_stack_number(_group_value(groups, "FrameContentSequence", "StackID")),
                ),
            )
        )
    return planes


def _classic_plane(
    instance: InstanceHeader, image_type: tuple[str, ...], echo_number: int | None
) -> Plane:
    missing = [
        k
        for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        if not instance.has(k)
    ]
    if missing:
        raise VolumeError(f"{instance.path.name}: no {', '.join(missing)}")
    if instance.number_of_frames != 1:
        # A classic multi-frame instance has one plane for all frames: not a stack we can place.
        raise VolumeError(
            f"{instance.path.name}: {instance.number_of_frames} frames share one "
            "ImagePositionPatient (multi-frame without per-frame functional groups)"
        )
    return Plane(
        instance=instance,
        frame_index=0,
        position=_floats(
            instance.numbers("ImagePositionPatient"), 3, "ImagePositionPatient", instance
        ),
        orientation=_floats(
            instance.numbers("ImageOrientationPatient"), 6, "ImageOrientationPatient", instance
        ),
        pixel_spacing=_floats(instance.numbers("PixelSpacing"), 2, "PixelSpacing", instance),
        slice_thickness=instance.number("SliceThickness"),
        rescale_slope=instance.number("RescaleSlope", 1.0) or 1.0,
        rescale_intercept=instance.number("RescaleIntercept", 0.0) or 0.0,
        image_type=image_type,
        echo_number=echo_number,
        variant=_variant(
            time=instance.number("TemporalPositionIdentifier"),
            b=instance.number("DiffusionBValue"),
        ),
    )


def _variant(**labels: float | None) -> tuple[tuple[str, float], ...]:
    return tuple((name, value) for name, value in labels.items() if value is not None)


def _stack_number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
