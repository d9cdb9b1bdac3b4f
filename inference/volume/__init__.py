"""Rebuild received series into typed 2D images and 3D volumes.

Public API: :func:`find_series` (SeriesInstanceUID to files, headers only) and
:func:`rebuild_series` (one series to a :class:`Volume3D` or a tuple of :class:`Image2D`).
Every failure is a :class:`VolumeError` naming the series and the reason.
"""

from inference.volume.series import find_series, rebuild_series
from inference.volume.types import Image2D, SeriesIdentity, Volume3D, VolumeError

__all__ = [
    "Image2D",
    "SeriesIdentity",
    "Volume3D",
    "VolumeError",
    "find_series",
    "rebuild_series",
]
