"""One stack in every transfer syntax we can write here: the same values after decoding."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from volume_factory import ct_stack, write

from inference.volume import Volume3D, rebuild_series


def _save(datasets: list[Dataset], folder: Path, syntax: UID) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / f"{index}.dcm"
        if syntax.is_compressed:
            ds.compress(syntax)
            ds.save_as(path, enforce_file_format=True)
        else:
            if not syntax.is_little_endian:  # pydicom writes OW bytes as given: swap them first
                ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
            ds.file_meta.TransferSyntaxUID = syntax
            ds.save_as(
                path,
                implicit_vr=syntax.is_implicit_VR,
                little_endian=syntax.is_little_endian,
                enforce_file_format=True,
            )
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEG2000Lossless,
        JPEGLSLossless,
    ],
    ids=lambda s: s.name,
)
def test_every_syntax_gives_the_same_volume(tmp_path: Path, syntax: UID) -> None:
    datasets, values = ct_stack(9, rows=32, columns=40)
    reference = rebuild_series(write(datasets, tmp_path / "native"))
    files = _save(datasets, tmp_path / "coded", syntax)
    # Enough instances for the process pool too: both decode paths give the same answer.
    for workers in (1, 2):
        result = rebuild_series(files, workers=workers)
        assert isinstance(result, Volume3D) and isinstance(reference, Volume3D)
        np.testing.assert_array_equal(result.array, reference.array)
        np.testing.assert_array_equal(result.array, values.astype(np.int32) - 1024)
        np.testing.assert_array_equal(result.affine, reference.affine)


def _rebuild_in_daemon(files: list[Path], queue: multiprocessing.Queue[object]) -> None:
    result = rebuild_series(files, workers=2)
    assert isinstance(result, Volume3D)
    queue.put(result.array.copy())


def test_a_daemonic_process_decodes_without_a_pool(tmp_path: Path) -> None:
    datasets, values = ct_stack(9, rows=8, columns=8)
    files = _save(datasets, tmp_path / "rle", RLELossless)
    context = multiprocessing.get_context("forkserver")
    queue: multiprocessing.Queue[object] = context.Queue()
    process = context.Process(target=_rebuild_in_daemon, args=(files, queue), daemon=True)
    process.start()
    process.join(timeout=60)  # the result is small: the child does not wait on the queue
    assert process.exitcode == 0
    array = queue.get(timeout=10)
    np.testing.assert_array_equal(array, values.astype(np.int32) - 1024)
