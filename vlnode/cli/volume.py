"""``vlnode volume PATH``: rebuild the series under a folder and describe them, to check by eye.

Prints, per series, its shape, spacing, orientation and value range; ``--nifti out.nii.gz``
also writes each rebuilt volume as NIfTI. A series that cannot be rebuilt is reported in one
line with the reason, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from inference.volume import Image2D, Volume3D

# LPS axes: the label of the positive direction, then of the negative one.
_AXIS_LABELS = (("L", "R"), ("P", "A"), ("S", "I"))


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "volume", help="rebuild the DICOM series under a folder and print their geometry"
    )
    parser.add_argument("path", type=Path, help="a folder (searched recursively) or one file")
    parser.add_argument(
        "--nifti",
        type=Path,
        metavar="OUT.nii.gz",
        help="write the rebuilt volume there (with -2, -3, ... before the suffix for more)",
    )
    parser.add_argument(
        "--tilt",
        choices=("refuse", "resample"),
        default="refuse",
        help="gantry-tilted stacks: refuse them (default) or resample to an orthogonal grid",
    )
    parser.add_argument("--series", metavar="UID", help="rebuild only this SeriesInstanceUID")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inference.volume import Volume3D, VolumeError, find_series, rebuild_series

    path: Path = args.path
    if not path.exists():
        print(f"vlnode: {path} does not exist", file=sys.stderr)
        return 2
    # One file: rebuild_series reads its series UID itself.
    series = find_series(path) if path.is_dir() else {"": [path]}
    if args.series:
        series = {uid: files for uid, files in series.items() if uid == args.series}
    if not series:
        print(f"vlnode: no DICOM series found under {path}", file=sys.stderr)
        return 1
    failed = 0
    written = 0
    for files in series.values():
        try:
            result = rebuild_series(files, tilt=args.tilt)
        except VolumeError as exc:
            # One line, even when a decoder's own message spans several.
            print(f"vlnode: {' '.join(str(exc).split())}", file=sys.stderr)
            failed += 1
            continue
        identity = result.series if isinstance(result, Volume3D) else result[0].series
        label = identity.series_instance_uid or "(no SeriesInstanceUID)"
        if isinstance(result, Volume3D):
            print(describe_volume(label, result))
            if args.nifti:
                written += 1
                out = _numbered(args.nifti, written)
                _write_nifti(result, out)
                print(f"  written to {out}")
        else:
            for line in describe_images(label, result):
                print(line)
    return 1 if failed else 0


def _numbered(path: Path, number: int) -> Path:
    if number == 1:
        return path
    name = path.name
    suffix = ".nii.gz" if name.endswith(".nii.gz") else path.suffix
    return path.with_name(f"{name[: len(name) - len(suffix)]}-{number}{suffix}")


def _write_nifti(volume: Volume3D, out: Path) -> None:
    import nibabel as nib

    from inference.volume.nifti import to_nifti

    nib.save(to_nifti(volume), str(out))


def _value_range(array: npt.NDArray[np.generic]) -> str:
    return f"{float(array.min()):.6g} .. {float(array.max()):.6g} ({array.dtype})"


def _axis_label(direction: npt.NDArray[np.float64]) -> str:
    axis = int(abs(direction).argmax())
    return _AXIS_LABELS[axis][0 if direction[axis] > 0 else 1]


def describe_volume(label: str, volume: Volume3D) -> str:
    """A few lines a person can check against a viewer."""
    spacing = " x ".join(f"{s:.4g}" for s in volume.spacing)
    axes = "/".join(_axis_label(volume.affine[:3, i]) for i in range(3))
    origin = ", ".join(f"{v:.2f}" for v in volume.affine[:3, 3])
    lines = [
        f"{label}: {volume.series.modality} volume {volume.array.shape} [slice, row, column]",
        f"  spacing {spacing} mm; slice/row/column run towards {axes}; first voxel at "
        f"({origin}) LPS mm",
        f"  values {_value_range(volume.array)}",
    ]
    lines.extend(f"  also in the series, left aside: {other}" for other in volume.other_stacks)
    return "\n".join(lines)


# A cine loop can hold hundreds of frames: list the first ones only.
_MAX_IMAGES_LISTED = 20


def describe_images(label: str, images: tuple[Image2D, ...]) -> list[str]:
    """One line per image (frame), the first few of a long series."""
    lines = [f"{label}: {len(images)} projection image(s)"]
    for image in images[:_MAX_IMAGES_LISTED]:
        spacing = (
            f"{image.pixel_spacing[0]:.4g} x {image.pixel_spacing[1]:.4g} mm "
            f"({image.spacing_source})"
            if image.pixel_spacing
            else "spacing unknown"
        )
        lines.append(
            f"  {image.source_sop_instance_uid} frame {image.frame_number}: "
            f"{image.pixels.shape}, {spacing}, values {_value_range(image.pixels)}"
            + (" after VOI" if image.voi_applied else "")
        )
    if len(images) > _MAX_IMAGES_LISTED:
        lines.append(f"  ... and {len(images) - _MAX_IMAGES_LISTED} more")
    return lines
