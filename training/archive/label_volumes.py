"""Label volumes for segmentation: each image (NIfTI file or DICOM series folder) paired with a
label map (NIfTI or DICOM SEG) on the same grid, as named by configuration.

This is the layout of the TotalSegmentator test files (``../shared/data/ct-totalsegmentator``)::

    pairs = [{image = "example_ct_sm.nii.gz", labels = "example_seg.nii.gz"}]
    pairs = [{image = "example_ct_dicom", labels = "example_seg_dicom.nii.gz"}]

A DICOM image goes through the node's own rebuild (:func:`inference.volume.rebuild_series`),
as a hospital's series would. A NIfTI label map must lie on the image's voxel grid: the same
voxel centres, in any axis order or direction (checked through both affines; a clear error
names both files otherwise). A DICOM SEG is read with
:func:`inference.dicom_out.seg.read_segmentation` (a vlnode SEG: labels in the Tracking IDs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom

from inference.volume import SeriesIdentity, Volume3D, VolumeError, find_series, rebuild_series
from inference.volume.nifti import RAS_FROM_LPS

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Voxel centres of label map and image may differ by this fraction of a voxel (float noise).
GRID_TOLERANCE = 0.01


class LabelVolumeError(ValueError):
    """An image or label file cannot be read, or the two do not lie on one grid."""


@dataclass(frozen=True)
class LabelPair:
    """An image and its label map, as named in the configuration (relative to the archive)."""

    image: str
    labels: str
    modality: str = "CT"  # for NIfTI images, which carry no modality


@dataclass(frozen=True)
class LabelledVolume:
    """An image with integer labels (catalogue values) on its own grid."""

    volume: Volume3D
    labels: npt.NDArray[np.integer]  # volume.array.shape[:3]
    image_file: Path
    labels_file: Path

    @property
    def name(self) -> str:
        return self.image_file.name


def read_pairs(archive: Path, pairs: tuple[LabelPair, ...]) -> list[LabelledVolume]:
    """Read every pair of a split; the first bad one raises :class:`LabelVolumeError`."""
    return [read_pair(archive, pair) for pair in pairs]


def read_pair(archive: Path, pair: LabelPair) -> LabelledVolume:
    image_file = archive / pair.image
    labels_file = archive / pair.labels
    volume = read_image(image_file, pair.modality)
    labels = read_labels(labels_file, volume, image_file)
    return LabelledVolume(volume, labels, image_file, labels_file)


def read_image(path: Path, modality: str = "CT") -> Volume3D:
    """A NIfTI file or a folder holding one DICOM series, as a :class:`Volume3D`."""
    if path.is_dir():
        series = find_series(path)
        if len(series) != 1:
            raise LabelVolumeError(
                f"{path}: a DICOM image folder must hold exactly one series, found {len(series)}"
            )
        try:
            rebuilt = rebuild_series(next(iter(series.values())))
        except VolumeError as exc:
            raise LabelVolumeError(f"{path}: {exc}") from exc
        if not isinstance(rebuilt, Volume3D):
            raise LabelVolumeError(f"{path}: the series is projection images, not a volume")
        return rebuilt
    if path.name.endswith(NIFTI_SUFFIXES):
        return volume_from_nifti(path, modality)
    raise LabelVolumeError(f"{path}: not a NIfTI file (.nii, .nii.gz) or a DICOM series folder")


def volume_from_nifti(path: Path, modality: str) -> Volume3D:
    """A NIfTI image as a :class:`Volume3D` (the inverse of
    :func:`inference.volume.nifti.to_nifti`): voxel values and world coordinates kept."""
    data, affine = _nifti(path)
    array = np.ascontiguousarray(np.swapaxes(data, 0, 2))
    return Volume3D(
        array=array,
        affine=_source_affine(affine),
        source_sop_instance_uids=("",) * array.shape[0],
        series=SeriesIdentity("", "", modality, series_description=path.name),
    )


def read_labels(path: Path, volume: Volume3D, image_file: Path) -> npt.NDArray[np.integer]:
    """The labels of ``path`` (NIfTI or DICOM SEG) on ``volume``'s grid."""
    if path.name.endswith(NIFTI_SUFFIXES):
        data, affine = _nifti(path)
        if not np.issubdtype(data.dtype, np.integer):
            if not np.all(np.equal(np.mod(data, 1), 0)):
                raise LabelVolumeError(f"{path}: label values must be whole numbers")
            data = data.astype(np.int32)
        if data.min() < 0:
            raise LabelVolumeError(f"{path}: negative label values")
        return _on_grid(np.swapaxes(data, 0, 2), _source_affine(affine), volume, path, image_file)
    try:
        seg = pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise LabelVolumeError(f"{path}: neither NIfTI nor readable DICOM: {exc}") from exc
    if seg.get("Modality") != "SEG":
        raise LabelVolumeError(f"{path}: a DICOM label file must be a SEG, not {seg.Modality}")
    from inference.dicom_out.seg import read_segmentation

    try:
        return read_segmentation(seg, volume)
    except ValueError as exc:
        raise LabelVolumeError(f"{path} on {image_file}: {exc}") from exc


def _nifti(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64]]:
    try:
        image = nib.load(path)
        assert isinstance(image, nib.Nifti1Image | nib.Nifti2Image)
        data = np.asanyarray(image.dataobj)
    except (OSError, AssertionError, nib.filebasedimages.ImageFileError) as exc:
        raise LabelVolumeError(f"{path}: cannot be read as NIfTI: {exc}") from exc
    if data.ndim != 3:
        raise LabelVolumeError(f"{path}: a 3D image is needed, this one has shape {data.shape}")
    return data, np.asarray(image.affine, dtype=np.float64)


def _source_affine(nifti_affine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A NIfTI affine (``i, j, k`` -> RAS) as a volume's (``k, j, i`` -> LPS)."""
    return np.asarray(RAS_FROM_LPS @ nifti_affine[:, [2, 1, 0, 3]], dtype=np.float64)


def _on_grid(
    labels: npt.NDArray[np.generic],
    affine: npt.NDArray[np.float64],
    volume: Volume3D,
    labels_file: Path,
    image_file: Path,
) -> npt.NDArray[np.integer]:
    """``labels`` (with its own source-order ``affine``) reordered onto ``volume``'s grid.

    The grids must share every voxel centre: the map between their indices is a signed
    permutation of axes that takes one box onto the other.
    """
    to_labels = np.linalg.inv(affine) @ volume.affine
    shape = volume.array.shape[:3]
    axes: list[int] = []
    flips: list[int] = []
    for a in range(3):
        column = to_labels[:3, a]
        p = int(np.argmax(np.abs(column)))
        sign = float(np.sign(column[p]))
        unit = np.zeros(3)
        unit[p] = sign
        start = 0.0 if sign > 0 else labels.shape[p] - 1.0
        if (
            not np.allclose(column, unit, atol=GRID_TOLERANCE)
            or abs(to_labels[p, 3] - start) > GRID_TOLERANCE
            or labels.shape[p] != shape[a]
            or p in axes
        ):
            raise LabelVolumeError(
                f"{labels_file} does not lie on the voxel grid of {image_file}: labels "
                f"{tuple(labels.shape)} voxels, image {shape} (slice, row, column); image voxel "
                f"axis {a} maps to label index steps {np.round(column, 4).tolist()} from "
                f"{np.round(to_labels[:3, 3], 3).tolist()}; resample one onto the other first"
            )
        axes.append(p)
        if sign < 0:
            flips.append(a)
    reordered = np.transpose(labels, axes)
    if flips:
        reordered = np.flip(reordered, axis=tuple(flips))
    return np.ascontiguousarray(reordered).astype(np.uint16 if labels.max() > 255 else np.uint8)
