"""Modality rescale of a whole stack (slope and intercept per slice), in place where it can be.

Integer slopes and intercepts keep integer data (CT in Hounsfield units stays ``int16``), and
the type is chosen from the values actually present so that a 12-bit CT never doubles in size.
Anything else (fractional slopes, as in PET or scaled MR) becomes ``float32``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_INTEGER_TYPES = tuple(np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "i8"))


def rescale(
    stored: npt.NDArray[np.integer],
    slopes: Sequence[float],
    intercepts: Sequence[float],
    *,
    bounds: tuple[int, int] | None = None,
) -> npt.NDArray[np.integer] | npt.NDArray[np.floating]:
    """Apply ``value = slope * stored + intercept`` slice by slice (first axis).

    ``stored`` may be modified and returned. Returns integer data when every slope and
    intercept is an integer, ``float32`` otherwise. ``bounds``, the range BitsStored allows,
    spares a pass over the data when it already shows that the result fits.
    """
    slope = np.asarray(slopes, dtype=np.float64)
    intercept = np.asarray(intercepts, dtype=np.float64)
    if np.all(slope == 1) and np.all(intercept == 0):
        return stored
    integral = np.all(slope == np.round(slope)) and np.all(intercept == np.round(intercept))
    uniform = np.all(slope == slope[0]) and np.all(intercept == intercept[0])
    if integral and uniform and stored.size:
        return _integer_rescale(stored, int(slope[0]), int(intercept[0]), bounds)
    shape = (-1,) + (1,) * (stored.ndim - 1)
    values = stored.astype(np.float32)
    values *= slope.astype(np.float32).reshape(shape)
    values += intercept.astype(np.float32).reshape(shape)
    return values


def _target_type(low: int, high: int, slope: int, intercept: int, itemsize: int) -> np.dtype[Any]:
    # The product is formed before the intercept is added: it must fit the type as well.
    ends = (slope * low, slope * high, slope * low + intercept, slope * high + intercept)
    out_low, out_high = min(ends), max(ends)
    return next(
        t
        for t in _INTEGER_TYPES
        if np.iinfo(t).min <= out_low
        and out_high <= np.iinfo(t).max
        and t.itemsize >= min(itemsize, 2)
    )


def _integer_rescale(
    stored: npt.NDArray[np.integer], slope: int, intercept: int, bounds: tuple[int, int] | None
) -> npt.NDArray[np.integer]:
    size = stored.dtype.itemsize
    target = None
    if bounds is not None:
        low, high = bounds
        target = _target_type(low, high, slope, intercept, size)
    if target is None or target.itemsize > size:
        # The allowed range is too wide: the values actually present may still fit.
        low, high = int(stored.min()), int(stored.max())
        target = _target_type(low, high, slope, intercept, size)
    if target.itemsize == size and (np.iinfo(target).min <= low and high <= np.iinfo(target).max):
        # Same width and the stored values fit the target type: reinterpret and work in place.
        values = stored.view(target)
    else:
        values = stored.astype(target)
    if slope != 1:
        np.multiply(values, target.type(slope), out=values)
    np.add(values, target.type(intercept), out=values, casting="unsafe")
    return values


@dataclass(frozen=True)
class InPlaceRescale:
    """A rescale that can run on each slice as soon as it is read, while it is in cache:
    one integral slope and intercept whose results, for every value BitsStored allows, fit a
    type as wide as the stored one."""

    target: np.dtype[Any]
    slope: int
    intercept: int

    def apply(self, stored_slice: npt.NDArray[np.integer]) -> None:
        values = stored_slice.view(self.target)
        if self.slope != 1:
            np.multiply(values, self.target.type(self.slope), out=values)
        np.add(values, self.target.type(self.intercept), out=values, casting="unsafe")

    def result(self, stored: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
        """The whole array, once :meth:`apply` has run on every slice."""
        return stored.view(self.target)


def in_place_rescale(
    stored_type: np.dtype[Any],
    slopes: Sequence[float],
    intercepts: Sequence[float],
    bounds: tuple[int, int],
) -> InPlaceRescale | None:
    """The slice-by-slice form of :func:`rescale` when there is one, else None (identity,
    fractional or per-slice values, or results that need a wider type)."""
    slope, intercept = set(slopes), set(intercepts)
    if len(slope) != 1 or len(intercept) != 1:
        return None
    (a,), (b,) = slope, intercept
    if a != round(a) or b != round(b) or (a == 1 and b == 0):
        return None
    low, high = bounds
    target = _target_type(low, high, int(a), int(b), stored_type.itemsize)
    info = np.iinfo(target)
    if target.itemsize != stored_type.itemsize or not (info.min <= low and high <= info.max):
        return None
    return InPlaceRescale(target=target, slope=int(a), intercept=int(b))
