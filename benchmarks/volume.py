"""Benchmark: rebuild a 300-slice 512x512 CT with vlnode and with SimpleITK, in the same run.

A synthetic CT (a water ellipse with noise, 12 bits stored, rescaled to HU) is written once
to a temporary folder under shuffled file names, uncompressed and as JPEG 2000 lossless.
Each kind is then read in alternating rounds by ``inference.volume.rebuild_series`` and by
SimpleITK's ``ImageSeriesReader`` (file names from ``GetGDCMSeriesFileNames``, sorted by
SimpleITK), after one warm-up round each so that the page cache is warm. Both results are
checked to hold the same values on the same grid. Prints the medians, vlnode's peak Python
memory relative to the volume's size, and ``speedup vs SimpleITK: N.NN`` per kind.

Run: ``.venv/bin/python benchmarks/volume.py [--slices 300] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.volume import Volume3D, rebuild_series

ROWS = COLUMNS = 512
SPACING = (0.7, 0.7)
STEP_MM = 1.25


def _slice_pixels(index: int, slices: int) -> npt.NDArray[np.uint16]:
    """Stored values of one slice: a body-like ellipse with noise, air outside (12 bits)."""
    rng = np.random.default_rng(index)
    rows, columns = np.ogrid[:ROWS, :COLUMNS]
    radius = 0.8 + 0.1 * np.sin(np.pi * index / slices)
    body = ((rows - 256) / (200 * radius)) ** 2 + ((columns - 256) / (240 * radius)) ** 2 <= 1
    pixels = np.where(body, 1064, 24) + rng.normal(0, 20, size=(ROWS, COLUMNS))
    return np.clip(pixels, 0, 4095).astype(np.uint16)


def _write_slice(job: tuple[int, int, str, str, str, str, bool]) -> None:
    index, slices, folder, name, study, series, j2k = job
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(f"{series}.{index + 1}")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.FrameOfReferenceUID = f"{study}.9"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesNumber, ds.InstanceNumber = 2, index + 1
    ds.ImagePositionPatient = [-179.0, -179.0, -400.0 + STEP_MM * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(SPACING)
    ds.SliceThickness = STEP_MM
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = _slice_pixels(index, slices).tobytes()
    if j2k:
        ds.compress(JPEG2000Lossless)
    ds.save_as(Path(folder) / name, enforce_file_format=True)


def write_series(folder: Path, slices: int, j2k: bool) -> list[Path]:
    """Write the synthetic CT under random file names; return the files in shuffled order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"{rng.integers(1 << 40):012x}.dcm" for _ in range(slices)]
    jobs = [
        (
            k,
            slices,
            str(folder),
            names[k],
            "1.2.826.0.1.3680043.8.498.10",
            "1.2.826.0.1.3680043.8.498.11",
            j2k,
        )
        for k in range(slices)
    ]
    with multiprocessing.get_context("forkserver").Pool() as pool:
        pool.map(_write_slice, jobs, chunksize=8)
    order = rng.permutation(slices)
    return [folder / names[k] for k in order]


def read_vlnode(files: list[Path]) -> Volume3D:
    volume = rebuild_series(files)
    assert isinstance(volume, Volume3D)
    return volume


def read_simpleitk(folder: Path) -> Any:
    import SimpleITK

    sitk: Any = SimpleITK  # untyped library
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def check_same(volume: Volume3D, image: Any) -> None:
    """Same values on the same grid (SimpleITK: [z, y, x] array, LPS origin, x-y-z axes)."""
    import SimpleITK

    sitk: Any = SimpleITK
    np.testing.assert_array_equal(volume.array, sitk.GetArrayViewFromImage(image))
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    np.testing.assert_allclose(volume.affine[:3, 3], origin, atol=1e-3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(volume.spacing[::-1]), spacing, atol=1e-4)
    # SimpleITK's direction: columns are the x (our column), y (row) and z (slice) axes.
    axes = volume.affine[:3, 2::-1] / np.asarray(volume.spacing[::-1])
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    np.testing.assert_allclose(axes, direction, atol=1e-6)


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def peak_memory_ratio(files: list[Path]) -> float:
    """vlnode's peak traced allocation during one rebuild, over the volume's own size."""
    tracemalloc.start()
    volume = read_vlnode(files)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / volume.array.nbytes


def bench(kind: str, folder: Path, files: list[Path], rounds: int) -> None:
    volume, image = read_vlnode(files), read_simpleitk(folder)  # warm-up: page cache, imports
    check_same(volume, image)
    del volume, image
    ours, theirs = [], []
    for _ in range(rounds):  # alternate, so that load from other work hits both alike
        ours.append(timed(lambda: read_vlnode(files)))
        theirs.append(timed(lambda: read_simpleitk(folder)))
    vlnode_s, sitk_s = statistics.median(ours), statistics.median(theirs)
    ratio = peak_memory_ratio(files)
    print(
        f"{kind}: vlnode {vlnode_s:.3f} s, SimpleITK {sitk_s:.3f} s "
        f"(medians of {rounds}); vlnode peak memory {ratio:.2f} x volume size"
    )
    print(f"{kind}: speedup vs SimpleITK: {sitk_s / vlnode_s:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--j2k-rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vlnode-volume-bench-"))
    try:
        print(f"{args.slices} x {ROWS} x {COLUMNS} CT in {root}; {os.cpu_count()} CPUs", flush=True)
        plain = write_series(root / "uncompressed", args.slices, j2k=False)
        bench("uncompressed", root / "uncompressed", plain, args.rounds)
        if args.j2k_rounds:
            j2k = write_series(root / "j2k", args.slices, j2k=True)
            bench("JPEG 2000 lossless", root / "j2k", j2k, args.j2k_rounds)
    finally:
        if not args.keep:
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
