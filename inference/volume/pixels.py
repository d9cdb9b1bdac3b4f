"""Stored pixel values of an ordered stack, read into one preallocated array.

Uncompressed frames are read with ``readinto`` straight into their slice of the array: no
decode, no intermediate copy. Everything else is decoded (:mod:`inference.volume.decode`)
and placed in the same array.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference.volume.decode import decode_into
from inference.volume.headers import InstanceHeader, native_pixel_offset
from inference.volume.planes import Plane
from inference.volume.types import VolumeError

# Threads reading uncompressed files: more than two gain nothing from the page cache.
READ_THREADS = 2


def stored_dtype(instance: InstanceHeader) -> np.dtype[np.integer]:
    """The numpy type of one stored sample (BitsAllocated, PixelRepresentation)."""
    bits = instance.integer("BitsAllocated")
    if bits not in (8, 16, 32):
        # Bit-packed (1) or unusual sizes are decoded by pydicom into the nearest whole type.
        bits = 8 if bits < 8 else 16 if bits <= 16 else 32
    signed = instance.integer("PixelRepresentation") == 1
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def stored_bounds(instance: InstanceHeader) -> tuple[int, int]:
    """The range of stored values that BitsStored allows (after :func:`read_pixels`)."""
    bits = instance.integer("BitsStored", stored_dtype(instance).itemsize * 8)
    if instance.integer("PixelRepresentation") == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


_LAYOUT_KEYWORDS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PixelRepresentation")


def _layout_key(instance: InstanceHeader) -> tuple[str | None, ...]:
    """The attributes that fix a frame's shape and type, as stored (cheap to compare)."""
    return tuple(instance.values.get(k) for k in _LAYOUT_KEYWORDS)


def _layout(instance: InstanceHeader) -> tuple[tuple[int, ...], np.dtype[np.integer]]:
    samples = instance.integer("SamplesPerPixel", 1)
    frame: tuple[int, ...] = (instance.integer("Rows"), instance.integer("Columns"))
    frame += (samples,) if samples > 1 else ()
    return frame, stored_dtype(instance)


def read_pixels(
    planes: Sequence[Plane],
    series: str,
    *,
    workers: int | None = None,
    per_slice: Callable[[npt.NDArray[np.integer]], None] | None = None,
) -> npt.NDArray[np.integer]:
    """Stored values of ``planes``, in their order, as one ``[slice, row, column(, sample)]`` array.

    Parameters
    ----------
    planes
        The ordered planes of one stack (one frame each).
    series
        The series' name for error messages.
    workers
        Processes decoding compressed instances; default: the number of CPUs.
    per_slice
        Applied in place to each uncompressed little-endian slice right after it is read
        (while it is in the CPU cache); the caller applies it only when all slices are so.

    Raises
    ------
    VolumeError
        When instances disagree on the pixel format or a frame cannot be read or decoded.
    """
    frame_shape, dtype = _layout(planes[0].instance)
    first = _layout_key(planes[0].instance)
    for plane in planes:
        if _layout_key(plane.instance) != first and _layout(plane.instance) != (
            frame_shape,
            dtype,
        ):
            raise VolumeError(
                f"series {series}: {plane.instance.path.name} stores "
                f"{_layout(plane.instance)} pixels, the others {(frame_shape, dtype)}"
            )
    out = np.empty((len(planes), *frame_shape), dtype=dtype)

    bits_stored = planes[0].instance.integer("BitsStored", dtype.itemsize * 8)
    to_decode: dict[Path, list[tuple[int, int]]] = defaultdict(list)
    native: list[int] = []
    byteswap: list[int] = []
    for index, plane in enumerate(planes):
        instance = plane.instance
        if not instance.native:
            to_decode[instance.path].append((plane.frame_index, index))
        elif instance.big_endian and dtype.itemsize > 1:
            byteswap.append(index)
        else:
            native.append(index)

    def read(indices: Sequence[int], clean: bool) -> None:
        for index in indices:
            _read_native(planes[index].instance, planes[index].frame_index, out[index], series)
            if clean:  # now, while the slice is still in the CPU cache, not in a second pass
                _clean_unused_bits(out[index], bits_stored)
                if per_slice is not None:
                    per_slice(out[index])

    # File reads release the GIL: two threads keep two cores copying from the page cache.
    threads = min(READ_THREADS, workers or os.cpu_count() or 1, max(1, len(native) // 16))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            halves = [native[k::threads] for k in range(threads)]
            for done in [pool.submit(read, part, True) for part in halves]:
                done.result()
    else:
        read(native, True)
    read(byteswap, False)
    if byteswap:
        out[byteswap] = _clean_unused_bits(out[byteswap].byteswap(), bits_stored)
    # pydicom's decoders already mask or sign-extend the bits above BitsStored.
    decode_into(out, to_decode, series, workers)
    return out


def same_pixels(first: Plane, second: Plane) -> bool:
    """Whether two frames hold the same stored values (to recognise a slice stored twice)."""
    values = [read_pixels([plane], "(comparison)", workers=1) for plane in (first, second)]
    return values[0].shape == values[1].shape and bool(np.array_equal(values[0], values[1]))


def _read_native(
    instance: InstanceHeader, frame_index: int, target: npt.NDArray[np.integer], series: str
) -> None:
    """Read one frame's bytes straight into ``target`` (no copy, no decode)."""
    try:
        with open(instance.path, "rb") as fp:
            fp.seek(native_pixel_offset(fp, instance) + frame_index * target.nbytes)
            got = fp.readinto(target.data.cast("B"))
    except OSError as exc:
        raise VolumeError(f"series {series}: cannot read {instance.path.name}: {exc}") from exc
    except VolumeError as exc:
        raise VolumeError(f"series {series}: {exc}") from exc
    if got != target.nbytes:
        raise VolumeError(f"series {series}: {instance.path.name} ends inside its pixel data")


def _clean_unused_bits(
    values: npt.NDArray[np.integer], bits_stored: int
) -> npt.NDArray[np.integer]:
    """Mask the bits above BitsStored (old overlays) or sign-extend them, in place."""
    unused = values.dtype.itemsize * 8 - bits_stored
    if unused <= 0 or values.dtype.itemsize == 1:
        return values
    if values.dtype.kind == "u":
        np.bitwise_and(values, values.dtype.type((1 << bits_stored) - 1), out=values)
    else:
        np.left_shift(values, unused, out=values)
        np.right_shift(values, unused, out=values)
    return values
