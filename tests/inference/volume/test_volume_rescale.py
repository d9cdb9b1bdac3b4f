"""Rescale of a stack: the narrowest exact integer type, in place where it can be."""

from __future__ import annotations

import numpy as np

from inference.volume.rescale import in_place_rescale, rescale


def test_identity_returns_the_stored_array_itself() -> None:
    stored = np.arange(6, dtype=np.uint16).reshape(1, 2, 3)
    assert rescale(stored, [1.0], [0.0]) is stored


def test_12_bit_ct_becomes_int16_in_place() -> None:
    stored = np.array([[[0, 4095]]], dtype=np.uint16)
    values = rescale(stored, [1.0], [-1024.0], bounds=(0, 4095))
    assert values.dtype == np.int16
    assert np.shares_memory(values, stored)  # no second volume in memory
    np.testing.assert_array_equal(values, [[[-1024, 3071]]])


def test_wide_bounds_fall_back_to_the_values_present() -> None:
    stored = np.array([[[0, 40000]]], dtype=np.uint16)
    values = rescale(stored, [1.0], [-1024.0], bounds=(0, 65535))
    # 40000 - 1024 does not fit int16: the exact result needs int32.
    assert values.dtype == np.int32
    np.testing.assert_array_equal(values, [[[-1024, 38976]]])


def test_integer_slope_keeps_integers_without_overflow() -> None:
    stored = np.array([[[30000, 2]]], dtype=np.uint16)
    values = rescale(stored, [2.0], [-60000.0])
    assert values.dtype.kind == "i"
    np.testing.assert_array_equal(values, [[[0, -59996]]])


def test_fractional_or_per_slice_values_become_float32() -> None:
    stored = np.array([[[10]], [[10]]], dtype=np.int16)
    values = rescale(stored, [0.5, 2.0], [1.0, 1.0])
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values.ravel(), [6.0, 21.0])


def test_in_place_plan_only_when_the_result_fits_the_stored_width() -> None:
    plan = in_place_rescale(np.dtype(np.uint16), [1.0, 1.0], [-1024.0, -1024.0], (0, 4095))
    assert plan is not None and plan.target == np.int16
    stored = np.array([[0, 4095]], dtype=np.uint16)
    plan.apply(stored)
    np.testing.assert_array_equal(plan.result(stored), [[-1024, 3071]])
    assert in_place_rescale(np.dtype(np.uint16), [1.0], [-1024.0], (0, 65535)) is None
    assert in_place_rescale(np.dtype(np.uint16), [1.0, 2.0], [0.0, 0.0], (0, 4095)) is None
    assert in_place_rescale(np.dtype(np.uint16), [0.5], [0.0], (0, 4095)) is None
    assert in_place_rescale(np.dtype(np.uint16), [1.0], [0.0], (0, 4095)) is None
