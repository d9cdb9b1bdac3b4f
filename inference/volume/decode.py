"""Compressed pixel data decoded by pydicom's handlers, in a pool of processes when many.

JPEG, JPEG-LS, JPEG 2000, RLE, deflated, planar or bit-packed data goes through pydicom's
pixel handlers (pylibjpeg, GDCM), one call per instance. The decoders hold the GIL, so
threads would not run them in parallel: a pool of processes does, and it is kept for the
next series because starting it costs about a second.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.pixels.utils import pixel_array

from inference.volume.types import VolumeError

# Below this many instances to decode, a process pool costs more than it saves.
MIN_INSTANCES_FOR_POOL = 8


def _decode_file(path: str) -> npt.NDArray[np.integer]:
    """Every frame of one file, decoded (module level so that a process pool can call it)."""
    try:
        return pixel_array(path)
    except AttributeError:
        # pixel_array() parses the file stream itself and cannot inflate a deflated one.
        return pydicom.dcmread(path).pixel_array


def decode_into(
    out: npt.NDArray[np.integer],
    to_decode: dict[Path, list[tuple[int, int]]],
    series: str,
    workers: int | None,
) -> None:
    """Decode the listed frames of each file into ``out`` (``path -> [(frame, slice)]``).

    Raises
    ------
    VolumeError
        When a file cannot be decoded or decodes to frames of another shape.
    """
    if not to_decode:
        return
    paths = list(to_decode)
    names = [str(p) for p in paths]
    workers = workers or os.cpu_count() or 1
    # A daemonic process (a worker of someone else's pool) may not start processes of its own.
    can_fork = not multiprocessing.current_process().daemon
    if workers > 1 and len(paths) >= MIN_INSTANCES_FOR_POOL and can_fork:
        pool = _decoder_pool(workers)
        chunk = max(1, len(paths) // (workers * 8))
        results = pool.map(_decode_file, names, chunksize=chunk)
        try:
            for path, frames in _checked(paths, results, series):
                _place(out, frames, to_decode[path], path, series)
        except VolumeError as exc:
            if isinstance(exc.__cause__, BrokenProcessPool):
                _discard_pool(pool)
            raise
        return
    for path, frames in _checked(paths, map(_decode_file, names), series):
        _place(out, frames, to_decode[path], path, series)


# One pool of decoder processes, started on first use and kept: starting processes and
# importing the decoders in them costs about a second, more than decoding a small series.
_pool_lock = threading.Lock()
_pools: dict[int, ProcessPoolExecutor] = {}


def _decoder_pool(workers: int) -> ProcessPoolExecutor:
    with _pool_lock:
        pool = _pools.get(workers)
        if pool is None:
            # forkserver: a clean process to fork from, safe even when the caller runs
            # threads; preloading this module there means each worker starts with the
            # decoders already imported.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            _pools[workers] = pool
        return pool


def _discard_pool(pool: ProcessPoolExecutor) -> None:
    """Forget a pool whose worker died, so that the next series starts a fresh one."""
    with _pool_lock:
        for workers, known in list(_pools.items()):
            if known is pool:
                del _pools[workers]
    pool.shutdown(wait=False, cancel_futures=True)


def _checked(
    paths: Sequence[Path], results: Iterator[npt.NDArray[np.integer]], series: str
) -> Iterator[tuple[Path, npt.NDArray[np.integer]]]:
    """Pair each path with its decoded frames; a decoder failure becomes a VolumeError."""
    for path in paths:
        try:
            frames = next(results)
        except Exception as exc:  # any decoder failure means this instance is unusable
            raise VolumeError(f"series {series}: cannot decode {path.name}: {exc}") from exc
        yield path, frames


def _place(
    out: npt.NDArray[np.integer],
    frames: npt.NDArray[np.integer],
    targets: list[tuple[int, int]],
    path: Path,
    series: str,
) -> None:
    frame_shape = out.shape[1:]
    frames = frames.reshape(-1, *frame_shape) if frames.ndim == len(frame_shape) else frames
    if frames.shape[1:] != frame_shape:
        raise VolumeError(
            f"series {series}: {path.name} decodes to frames of {frames.shape[1:]}, "
            f"not {frame_shape}"
        )
    sources = [frame for frame, _ in targets]
    if max(sources) >= len(frames):
        raise VolumeError(f"series {series}: {path.name} has {len(frames)} frames, too few")
    out[[index for _, index in targets]] = frames[sources]
