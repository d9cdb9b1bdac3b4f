"""Projection images built on the fly: MONOCHROME1, VOI LUT, window, spacing, frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from volume_factory import dx_image, write

from inference.volume import Image2D, rebuild_series


def _images(files: list[Path]) -> tuple[Image2D, ...]:
    result = rebuild_series(files)
    assert isinstance(result, tuple)
    return result


STORED = np.array([[0, 100], [2000, 4095]], dtype=np.uint16)


def test_monochrome1_is_inverted_so_bright_means_dense(tmp_path: Path) -> None:
    (image,) = _images(write([dx_image(STORED, photometric="MONOCHROME1")], tmp_path))
    # 12 bits stored: 0 (displayed white) becomes 4095, the brightest.
    np.testing.assert_array_equal(image.pixels, [[4095, 3995], [2095, 0]])
    assert image.photometric_interpretation == "MONOCHROME2"
    assert not image.voi_applied


def test_monochrome2_keeps_its_values(tmp_path: Path) -> None:
    (image,) = _images(write([dx_image(STORED)], tmp_path))
    np.testing.assert_array_equal(image.pixels, STORED)


def test_spacing_source_is_recorded(tmp_path: Path) -> None:
    (image,) = _images(write([dx_image(STORED)], tmp_path / "imager"))
    assert image.pixel_spacing == (0.139, 0.139)
    assert image.spacing_source == "ImagerPixelSpacing"
    calibrated = dx_image(STORED)
    calibrated.PixelSpacing = [0.15, 0.16]
    (image,) = _images(write([calibrated], tmp_path / "calibrated"))
    assert (image.pixel_spacing, image.spacing_source) == ((0.15, 0.16), "PixelSpacing")


def _with_voi_lut(ds: Dataset) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    # A reversed ramp: the LUT, not a formula, decides the output.
    item.LUTData = np.linspace(65535, 0, 4096).round().astype("<u2").tobytes()  # as OW
    ds.VOILUTSequence = DicomSequence([item])
    return ds


def test_voi_lut_is_applied_and_scaled_to_unit_range(tmp_path: Path) -> None:
    (image,) = _images(write([_with_voi_lut(dx_image(STORED))], tmp_path))
    assert image.voi_applied
    expected = np.linspace(65535, 0, 4096).round()[STORED] / 65535
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


def test_voi_lut_then_monochrome1_inversion(tmp_path: Path) -> None:
    ds = _with_voi_lut(dx_image(STORED, photometric="MONOCHROME1"))
    (image,) = _images(write([ds], tmp_path))
    expected = 1 - np.linspace(65535, 0, 4096).round()[STORED] / 65535
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("LINEAR", [[0.0, 0.0], [0.5, 1.0]]),
        ("LINEAR_EXACT", [[0.0, 0.0], [0.5, 1.0]]),
        (
            "SIGMOID",
            [[1 / (1 + np.exp(8)), 1 / (1 + np.exp(-4 * (100 - 2000.5) / 1000))], [0.5, 1.0]],
        ),
    ],
)
def test_window_maps_to_unit_range(
    tmp_path: Path, function: str, expected: list[list[float]]
) -> None:
    ds = dx_image(STORED)
    ds.WindowCenter, ds.WindowWidth = (2000.5 if function != "LINEAR_EXACT" else 2000.0), 1000
    ds.VOILUTFunction = function
    (image,) = _images(write([ds], tmp_path))
    assert image.voi_applied
    np.testing.assert_allclose(image.pixels, expected, atol=1e-3)


def test_rescale_before_window(tmp_path: Path) -> None:
    ds = dx_image(STORED)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    (image,) = _images(write([ds], tmp_path))
    np.testing.assert_array_equal(image.pixels, STORED * 2.0 - 100)


def test_every_frame_of_a_multiframe_instance_is_an_image(tmp_path: Path) -> None:
    frames = np.stack([STORED, STORED // 2, STORED // 3])
    images = _images(write([dx_image(frames)], tmp_path))
    assert [i.frame_number for i in images] == [1, 2, 3]
    for k, image in enumerate(images):
        np.testing.assert_array_equal(image.pixels, STORED // (k + 1))
    assert len({i.source_sop_instance_uid for i in images}) == 1


def test_palette_color_becomes_rgb(tmp_path: Path) -> None:
    ds = dx_image(np.array([[0, 1], [2, 3]], dtype=np.uint8), bits_stored=8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour, values in (
        ("Red", [0, 100, 200, 300]),
        ("Green", [0, 0, 0, 0]),
        ("Blue", [400, 300, 200, 100]),
    ):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.array(values, dtype="<u2").tobytes())
    (image,) = _images(write([ds], tmp_path))
    assert image.is_rgb and image.photometric_interpretation == "RGB"
    np.testing.assert_array_equal(image.pixels[1, 1], [300, 0, 100])
