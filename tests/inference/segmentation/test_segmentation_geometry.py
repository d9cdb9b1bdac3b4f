"""The label map comes back on the source grid exactly: shape and affine of the source, and an
object where it was, for an oblique, anisotropic series (synthetic geometry, known object)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch

from inference.segmentation.config import SegmentationModelConfig
from inference.segmentation.preprocess import grid_affine
from inference.segmentation.resample import labels_on_source_grid
from inference.segmentation.segment import segment_volume
from inference.volume import SeriesIdentity, Volume3D

SPACING = (2.5, 0.9, 0.7)  # (slice, row, column) mm
SHAPE = (28, 90, 110)
LABEL = 5


class Threshold(torch.nn.Module):
    """Background / object logits from the scaled intensity alone (a fixed, known 'model')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 20.0


def rotation(axis: npt.ArrayLike, degrees: float) -> npt.NDArray[np.float64]:
    a = np.asarray(axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.deg2rad(degrees)
    turned: npt.NDArray[np.float64] = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    return turned


def oblique_volume(centre: npt.NDArray[np.float64], radius: float) -> Volume3D:
    """CT-like values: a 500 HU sphere in -500 HU, on an oblique 0.7 x 0.9 x 2.5 mm grid."""
    turn = rotation([1.0, 2.0, 0.5], 25.0)
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag(SPACING)
    affine[:3, 3] = [-40.0, 25.0, 110.0]
    volume = Volume3D(
        array=np.zeros(SHAPE, dtype=np.float32),
        affine=affine,
        source_sop_instance_uids=tuple(f"1.2.3.{i}" for i in range(SHAPE[0])),
        series=SeriesIdentity("1.2", "1.2.3", "CT"),
    )
    inside = object_mask(volume, centre, radius)
    volume.array[:] = np.where(inside, 500.0, -500.0)
    return volume


def object_mask(
    volume: Volume3D, centre: npt.NDArray[np.float64], radius: float
) -> npt.NDArray[np.bool_]:
    indices = np.indices(volume.array.shape).reshape(3, -1).T
    world = volume.voxel_to_world(indices)
    inside: npt.NDArray[np.bool_] = np.linalg.norm(world - centre, axis=1) <= radius
    return inside.reshape(volume.array.shape)


def centre_of(volume: Volume3D, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    return np.asarray(volume.voxel_to_world(np.argwhere(mask)).mean(axis=0))


def test_oblique_anisotropic_series_comes_back_on_its_own_grid() -> None:
    probe = oblique_volume(np.zeros(3), 1.0)
    middle = probe.voxel_to_world((np.array(SHAPE) - 1) / 2.0)
    # Off the grid's centre, so a flipped or transposed result would land elsewhere.
    centre = middle + np.array([9.0, -6.0, 5.0])
    volume = oblique_volume(centre, radius=14.0)
    truth = object_mask(volume, centre, 14.0)
    config = SegmentationModelConfig(
        labels=(LABEL,), spacing=(1.5, 1.5, 1.5), roi_size=(32, 32, 32), overlap=0.25
    )
    labels = segment_volume(Threshold(), config, volume, torch.device("cpu"))

    assert labels.shape == volume.array.shape
    assert set(np.unique(labels).tolist()) == {0, LABEL}
    found = labels == LABEL
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert dice > 0.93
    assert np.linalg.norm(centre_of(volume, found) - centre) < 0.5  # mm


def test_resampling_onto_the_same_grid_is_the_identity() -> None:
    volume = oblique_volume(np.zeros(3), 1.0)
    rng = np.random.default_rng(0)
    labels_src = rng.integers(0, 7, size=SHAPE).astype(np.uint8)
    on_model_grid = np.ascontiguousarray(np.swapaxes(labels_src, 0, 2))  # [x, y, z]
    back = labels_on_source_grid(on_model_grid, grid_affine(volume), volume)
    assert np.array_equal(back, labels_src)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_resampling_undoes_a_flipped_model_grid(axis: int) -> None:
    volume = oblique_volume(np.zeros(3), 1.0)
    labels_src = np.random.default_rng(1).integers(0, 4, size=SHAPE).astype(np.uint8)
    xyz = np.swapaxes(labels_src, 0, 2)
    flip = np.eye(4)
    flip[axis, axis] = -1.0
    flip[axis, 3] = xyz.shape[axis] - 1
    model_affine = grid_affine(volume) @ flip  # the same voxel centres, one axis reversed
    back = labels_on_source_grid(np.flip(xyz, axis=axis).copy(), model_affine, volume)
    assert np.array_equal(back, labels_src)


def test_voxels_outside_the_model_grid_read_background() -> None:
    volume = oblique_volume(np.zeros(3), 1.0)
    small = np.full((4, 4, 4), 3, dtype=np.uint8)
    back = labels_on_source_grid(small, grid_affine(volume), volume)
    assert back[:4, :4, :4].min() == 3
    assert back[5:].max() == 0 and back[:, 5:].max() == 0
