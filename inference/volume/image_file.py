"""Read an image file (JPEG, PNG) into the shared :class:`Image2D` type.

This is the node's reconstruction path for image files, and the training archive readers use
it too, so a model is trained on exactly the pixels it will see at inference time. Image files
carry no DICOM identity; the identifiers are derived from the file's content so that the same
file always gets the same (non-DICOM) UID-like label.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from inference.volume.types import Image2D, SeriesIdentity, VolumeError

# Pillow modes we convert, and what they become: greyscale stays one channel, colour is kept
# as RGB (a photograph or a screen capture), palette and alpha images are flattened first.
_GREY_MODES = {"L", "I", "I;16", "I;16B", "I;16L", "F", "1"}


def read_image_file(path: str | Path) -> Image2D:
    """Read one JPEG or PNG file as an :class:`Image2D`.

    Parameters
    ----------
    path:
        The image file.

    Returns
    -------
    Image2D
        Greyscale pixels as ``float32`` ``[row, column]`` (colour images as
        ``[row, column, 3]``), with no pixel spacing (files carry none).

    Raises
    ------
    VolumeError
        The file is missing, is not an image Pillow can decode, or is empty.
    """
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise VolumeError(
            f"image file {str(file)!r} cannot be read: {exc.strerror or exc}"
        ) from exc
    if not data:
        raise VolumeError(f"image file {str(file)!r} is empty")
    try:
        from io import BytesIO

        with Image.open(BytesIO(data)) as img:
            img.load()
            if img.mode in _GREY_MODES:
                pixels = np.asarray(img.convert("F") if img.mode == "1" else img)
                rgb = False
            else:
                pixels = np.asarray(img.convert("RGB"))
                rgb = True
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VolumeError(f"image file {str(file)!r} is not a readable image: {exc}") from exc
    if pixels.size == 0 or min(pixels.shape[:2]) < 1:
        raise VolumeError(f"image file {str(file)!r} has no pixels")
    pixels = pixels.astype(np.float32)
    if rgb and _is_grey(pixels):
        pixels = pixels[..., 0].copy()
        rgb = False
    digest = hashlib.sha256(data).hexdigest()
    # 2.25 is the UUID-derived UID root (PS3.5 B.2); the digest makes it stable per file.
    uid = "2.25." + str(int(digest[:30], 16))
    series = SeriesIdentity(
        study_instance_uid=uid,
        series_instance_uid=uid,
        modality="OT",
        series_description=file.name,
    )
    return Image2D(
        pixels=pixels,
        pixel_spacing=None,
        spacing_source="none",
        source_sop_instance_uid=uid,
        frame_number=1,
        series=series,
        photometric_interpretation="RGB" if rgb else "MONOCHROME2",
    )


def _is_grey(pixels: np.ndarray) -> bool:
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1])) and bool(
        np.array_equal(pixels[..., 0], pixels[..., 2])
    )
