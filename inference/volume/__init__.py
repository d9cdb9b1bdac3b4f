"""Rebuild received series into typed 2D images and 3D volumes."""

from inference.volume.types import Image2D, SeriesIdentity, Volume3D, VolumeError

__all__ = ["Image2D", "SeriesIdentity", "Volume3D", "VolumeError"]
