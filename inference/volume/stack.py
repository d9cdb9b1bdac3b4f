"""Group planes into stacks, pick the main one, order it along its normal and check it.

A stack is a set of parallel planes of one frame of reference, image type, echo, time point
and b-value, with the same matrix size and pixel spacing. The largest stack is the main one;
among equally large stacks of one geometry (echoes, time points) the first is. Slices are
ordered by ImagePositionPatient projected on the slice normal (never by file name or
InstanceNumber). The checks here are what make the
affine trustworthy: one orientation, distinct positions, equal steps (no missing slice), and
every slice on the line through the first and the last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.volume.planes import Plane
from inference.volume.types import VolumeError

# Direction cosines closer than this are one orientation (about 0.06 degrees).
ORIENTATION_TOLERANCE = 1e-3
# Two stacks alike but for an orientation this close are one stack with inconsistent cosines.
INCONSISTENT_ORIENTATION_DEGREES = 10.0
# Positions are written with limited digits and scanners jitter: steps may differ by this much
# and still be equal (the tolerances of dicom2nifti, whose conversions are the references).
# The grid then spans first to last slice, so no voxel is further off than this.
SPACING_ABS_TOLERANCE_MM = 0.1
SPACING_REL_TOLERANCE = 0.05
# A slice direction up to this far from the normal keeps its exact, slightly sheared affine;
# beyond, it is a gantry tilt and the tilt policy applies (refuse, or resample).
TILT_TOLERANCE_DEGREES = 3.0


@dataclass(frozen=True)
class Stack:
    """The main stack of a series, ordered and checked, with the affine of its grid.

    ``affine`` maps ``(slice, row, column, 1)`` to LPS mm. When the stack is tilted its slice
    axis follows the slice positions (a sheared grid) and ``tilt_degrees`` says by how much.
    """

    planes: tuple[Plane, ...]
    affine: npt.NDArray[np.float64]
    tilt_degrees: float
    others: tuple[str, ...]  # one line per stack left aside, e.g. "1 slice LOCALIZER"

    @property
    def shape(self) -> tuple[int, int, int]:
        instance = self.planes[0].instance
        return (len(self.planes), instance.integer("Rows"), instance.integer("Columns"))


def _stack_key(plane: Plane) -> tuple[object, ...]:
    instance = plane.instance
    return (
        instance.text("FrameOfReferenceUID"),
        plane.image_type,
        plane.echo_number,
        plane.variant,
        instance.integer("Rows"),
        instance.integer("Columns"),
        tuple(round(v, 4) for v in plane.pixel_spacing),
    )


def group_stacks(planes: Sequence[Plane]) -> list[list[Plane]]:
    """Split planes into stacks, largest first (ties keep the order of first appearance)."""
    groups: list[tuple[tuple[object, ...], npt.NDArray[np.float64], list[Plane]]] = []
    for plane in planes:
        key = _stack_key(plane)
        cosines = np.asarray(plane.orientation, dtype=np.float64)
        for other_key, other_cosines, members in groups:
            if other_key == key and np.abs(other_cosines - cosines).max() < ORIENTATION_TOLERANCE:
                members.append(plane)
                break
        else:
            groups.append((key, cosines, [plane]))
    stacks = [members for _, _, members in groups]
    stacks.sort(key=len, reverse=True)
    return stacks


def _describe(stack: Sequence[Plane]) -> str:
    first = stack[0]
    kind = "\\".join(first.image_type) or "untyped"
    orientation = ", ".join(f"{v:.3f}" for v in first.orientation)
    count = f"{len(stack)} slice" + ("s" if len(stack) != 1 else "")
    echo = f" echo {first.echo_number}" if first.echo_number is not None else ""
    variant = "".join(f" {name} {value:g}" for name, value in first.variant)
    return f"{count} {kind}{echo}{variant} orientation ({orientation})"


def main_stack(
    planes: Sequence[Plane],
    series: str,
    same_pixels: Callable[[Plane, Plane], bool] | None = None,
) -> Stack:
    """Choose the largest stack of ``planes``, order it and check its geometry.

    ``same_pixels`` tells whether two planes at one position hold the same pixels: such a
    slice stored twice under two UIDs is kept once. Without it, any repeat is refused.

    Raises
    ------
    VolumeError
        When the largest stack is not unique, or it is not a regular grid.
    """
    stacks = group_stacks(planes)
    tied = [s for s in stacks if len(s) == len(stacks[0])]
    if len(tied) > 1:
        cosines = np.asarray([s[0].orientation for s in tied])
        if np.abs(cosines - cosines[0]).max() >= ORIENTATION_TOLERANCE:
            orientations = {tuple(round(v, 3) for v in c) for c in cosines}
            raise VolumeError(
                f"series {series}: {len(orientations)} orientations with {len(tied[0])} slices "
                f"each, no main stack ({'; '.join(_describe(s) for s in tied)})"
            )
        # Same geometry, several echoes or time points: the first one is the main stack.
        main = min(tied, key=lambda s: (s[0].echo_number or 0, s[0].variant))
        stacks = [main, *(s for s in stacks if s is not main)]
    _refuse_slightly_turned(stacks, series)
    main = _without_repeats(stacks[0], same_pixels)
    repeats = len(stacks[0]) - len(main)
    ordered, affine, tilt = _order_and_check(main, series)
    others = tuple(_describe(s) for s in stacks[1:])
    if repeats:
        others += (
            f"{repeats} repeated slice{'s' if repeats > 1 else ''} (same position and "
            "pixels as another) dropped",
        )
    return Stack(planes=tuple(ordered), affine=affine, tilt_degrees=tilt, others=others)


def _without_repeats(
    stack: Sequence[Plane], same_pixels: Callable[[Plane, Plane], bool] | None
) -> list[Plane]:
    """The stack with each slice stored twice (same position, same pixels) kept once."""
    if same_pixels is None:
        return list(stack)
    kept: dict[tuple[float, ...], list[Plane]] = {}
    result = []
    for plane in stack:
        key = tuple(round(v, 3) for v in plane.position)
        twins = kept.setdefault(key, [])
        if any(same_pixels(twin, plane) for twin in twins):
            continue
        twins.append(plane)
        result.append(plane)
    return result


def _angle_degrees(first: Plane, second: Plane) -> float:
    """The largest angle between the row cosines or the column cosines of two planes."""
    a = np.asarray(first.orientation).reshape(2, 3)
    b = np.asarray(second.orientation).reshape(2, 3)
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())


def _refuse_slightly_turned(stacks: Sequence[Sequence[Plane]], series: str) -> None:
    """A stack like the main one but turned by a few degrees is one stack whose orientation
    is inconsistent (a localizer, by contrast, is turned by tens of degrees)."""
    main = stacks[0][0]
    for other in stacks[1:]:
        if _stack_key(other[0]) != _stack_key(main):
            continue
        angle = _angle_degrees(main, other[0])
        if angle < INCONSISTENT_ORIENTATION_DEGREES:
            raise VolumeError(
                f"series {series}: 2 orientations {angle:.2f} degrees apart in one stack "
                f"({len(stacks[0])} and {len(other)} slices): inconsistent "
                "ImageOrientationPatient"
            )


def _order_and_check(
    stack: Sequence[Plane], series: str
) -> tuple[list[Plane], npt.NDArray[np.float64], float]:
    cosines = np.asarray([p.orientation for p in stack], dtype=np.float64)
    row_cosine, column_cosine = cosines[0, :3], cosines[0, 3:]
    if abs(np.linalg.norm(row_cosine) - 1) > 1e-2 or abs(np.linalg.norm(column_cosine) - 1) > 1e-2:
        raise VolumeError(f"series {series}: ImageOrientationPatient is not two unit vectors")
    if abs(float(row_cosine @ column_cosine)) > 1e-2:
        raise VolumeError(f"series {series}: ImageOrientationPatient vectors are not orthogonal")
    normal = np.cross(row_cosine, column_cosine)
    normal /= np.linalg.norm(normal)

    positions = np.asarray([p.position for p in stack], dtype=np.float64)
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    positions, heights = positions[order], heights[order]
    ordered = [stack[i] for i in order]

    row_spacing, column_spacing = ordered[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 1] = column_cosine * row_spacing  # down the rows: along the column cosine
    affine[:3, 2] = row_cosine * column_spacing  # along a row: the row cosine
    affine[:3, 3] = positions[0]
    if len(ordered) == 1:
        thickness = _single_slice_step(ordered[0])
        affine[:3, 0] = normal * thickness
        return ordered, affine, 0.0

    _check_steps(np.diff(heights), series)
    step = (positions[-1] - positions[0]) / (len(ordered) - 1)
    # Every slice must lie where the regular grid puts it, in the plane as well as along it.
    expected = positions[0] + np.arange(len(ordered))[:, None] * step
    off = np.linalg.norm(positions - expected, axis=1)
    tolerance = max(SPACING_ABS_TOLERANCE_MM, SPACING_REL_TOLERANCE * float(np.linalg.norm(step)))
    worst = int(np.argmax(off))
    if off[worst] > tolerance:
        raise VolumeError(
            f"series {series}: slice {worst} is {off[worst]:.2f} mm off the line through the "
            "first and last slice positions (not a regular grid)"
        )
    cos_tilt = abs(float(step @ normal)) / float(np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(1.0, cos_tilt))))
    affine[:3, 0] = step
    return ordered, affine, tilt if tilt > TILT_TOLERANCE_DEGREES else 0.0


def _single_slice_step(plane: Plane) -> float:
    for value in (plane.instance.number("SpacingBetweenSlices"), plane.slice_thickness):
        if value is not None and value > 0:
            return value
    return 1.0


def _check_steps(steps: npt.NDArray[np.float64], series: str) -> None:
    """Refuse duplicate positions, missing slices and unequal spacing, naming the slice."""
    typical = float(np.median(steps))
    tolerance = max(SPACING_ABS_TOLERANCE_MM, SPACING_REL_TOLERANCE * abs(typical))
    duplicates = np.flatnonzero(steps < tolerance)
    if typical < tolerance or duplicates.size:
        count = int(duplicates.size) + 1 if typical >= tolerance else len(steps) + 1
        where = "" if typical < tolerance else f" (first at slice {int(duplicates[0])})"
        raise VolumeError(
            f"series {series}: {count} slices share one position{where}: not a volume "
            "(repeated acquisitions, time points or duplicates)"
        )
    bad = np.flatnonzero(np.abs(steps - typical) > tolerance)
    if bad.size == 0:
        return
    index = int(bad[0])
    gap = float(steps[index])
    ratio = gap / typical
    if abs(ratio - round(ratio)) * typical <= tolerance and round(ratio) >= 2:
        missing = round(ratio) - 1
        raise VolumeError(
            f"series {series}: {missing} missing slice{'s' if missing > 1 else ''} between "
            f"slice {index} and {index + 1} (gap of {gap:.2f} mm where spacing is {typical:.2f} mm)"
        )
    raise VolumeError(
        f"series {series}: inconsistent spacing of {gap:.2f} vs {typical:.2f} mm at slice "
        f"{index + 1}"
    )
