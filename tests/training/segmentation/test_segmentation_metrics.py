"""Dice and HD95 of two masks, in mm on an anisotropic grid (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.segmentation.evaluate import structure_metrics


def cube(shape: tuple[int, int, int], start: tuple[int, int, int], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def test_identical_masks() -> None:
    a = cube((20, 30, 30), (5, 5, 5), 8)
    dice, hd95 = structure_metrics(a, a.copy(), (2.0, 0.5, 0.5))
    assert dice == pytest.approx(1.0)
    assert hd95 == pytest.approx(0.0)


def test_a_shift_along_the_slice_axis_is_measured_in_mm() -> None:
    a = cube((20, 30, 30), (5, 5, 5), 8)
    b = cube((20, 30, 30), (7, 5, 5), 8)  # two slices of 2.5 mm further
    dice, hd95 = structure_metrics(a, b, (2.5, 0.5, 0.5))
    assert dice == pytest.approx(2 * 6 / 16)
    assert hd95 == pytest.approx(5.0)


def test_a_missing_structure_has_dice_zero_and_no_distance() -> None:
    a = cube((10, 10, 10), (2, 2, 2), 3)
    dice, hd95 = structure_metrics(a, np.zeros_like(a), (1.0, 1.0, 1.0))
    assert dice == 0.0
    assert math.isnan(hd95)
