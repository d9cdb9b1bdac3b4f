"""Reading image files into Image2D: grey, colour, and bad input named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.models.config import ImageEncoderConfig
from inference.models.preprocess import image_to_tensor
from inference.volume.image_file import read_image_file
from inference.volume.types import VolumeError


def test_grey_png_reads_as_float_pixels(tmp_path: Path) -> None:
    pixels = np.arange(200, dtype=np.uint8).reshape(10, 20)
    Image.fromarray(pixels, mode="L").save(tmp_path / "a.png")
    image = read_image_file(tmp_path / "a.png")
    assert image.pixels.shape == (10, 20)
    assert image.pixels.dtype == np.float32
    assert np.array_equal(image.pixels, pixels.astype(np.float32))
    assert image.pixel_spacing is None and not image.is_rgb
    # The identity is derived from the content: the same file gives the same UID.
    assert (
        read_image_file(tmp_path / "a.png").source_sop_instance_uid == image.source_sop_instance_uid
    )


def test_colour_jpeg_stays_rgb_and_grey_rgb_collapses(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    assert read_image_file(tmp_path / "c.png").is_rgb
    grey = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 3, axis=2)
    Image.fromarray(grey, mode="RGB").save(tmp_path / "g.png")
    assert not read_image_file(tmp_path / "g.png").is_rgb


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read"), (b"", "is empty"), (b"\x89PNG garbage", "not a readable image")],
)
def test_bad_files_raise_volume_error_naming_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VolumeError, match=message) as info:
        read_image_file(path)
    assert "bad.png" in str(info.value)


def test_preprocess_pads_to_square_and_scales(tmp_path: Path) -> None:
    pixels = np.full((20, 40), 10, dtype=np.uint8)
    pixels[:, 20:] = 250
    Image.fromarray(pixels, mode="L").save(tmp_path / "wide.png")
    config = ImageEncoderConfig(image_size=(16, 16))
    tensor = image_to_tensor(read_image_file(tmp_path / "wide.png"), config)
    assert tensor.shape == (1, 16, 16) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0
    # Padding rows (top and bottom quarter) are background.
    assert float(tensor[0, 0].max()) == pytest.approx(-1.0)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8), mode="L").save(blank)
    with pytest.raises(VolumeError, match="blank"):
        image_to_tensor(read_image_file(blank), config)
