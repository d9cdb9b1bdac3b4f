"""Archive records turned into tensors: images through the node's own rebuild, text views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inference.models.config import ImageEncoderConfig
from inference.models.entities import EntityLexicon
from inference.models.preprocess import to_tensor
from inference.volume.image_file import read_image_file
from inference.volume.types import Image2D, Volume3D, VolumeError
from training.archive.records import ArchiveRecord, ReadSummary


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed network inputs (float16 to halve memory) and the records they came from."""

    images: torch.Tensor  # [N, C, *image_size]
    records: tuple[ArchiveRecord, ...]


def load_item(record: ArchiveRecord) -> Image2D | Volume3D:
    """Rebuild a record's image the way the node does (image file, or DICOM series)."""
    if len(record.sources) == 1 and record.sources[0].suffix.lower() in {
        ".jpg",
        ".jpeg",
        ".png",
    }:
        return read_image_file(record.sources[0])
    from inference import volume

    rebuild_series = getattr(volume, "rebuild_series", None)
    if rebuild_series is None:
        raise VolumeError(f"series {record.key}: DICOM rebuild is not available in this build")

    rebuilt = rebuild_series(list(record.sources))
    if isinstance(rebuilt, tuple):
        if not rebuilt or not isinstance(rebuilt[0], Image2D):
            raise VolumeError(f"series {record.key} has no images")
        first: Image2D = rebuilt[0]
        return first
    if not isinstance(rebuilt, Volume3D):
        raise VolumeError(f"series {record.key} rebuilt into {type(rebuilt).__name__}")
    return rebuilt


def load_images(
    records: Sequence[ArchiveRecord], config: ImageEncoderConfig, summary: ReadSummary
) -> ImageSet:
    """Read and preprocess every record; unreadable ones are counted in ``summary``, skipped."""
    tensors: list[torch.Tensor] = []
    kept: list[ArchiveRecord] = []
    for record in records:
        try:
            tensor = to_tensor(load_item(record), config)
        except (VolumeError, ValueError, OSError) as exc:
            summary.skip(record.key, "unreadable image", str(exc))
            continue
        tensors.append(tensor.to(torch.float16))
        kept.append(record)
    summary.records = len(kept)
    if not tensors:
        shape = (0, config.in_channels, *config.image_size)
        return ImageSet(images=torch.zeros(shape, dtype=torch.float16), records=())
    return ImageSet(images=torch.stack(tensors), records=tuple(kept))


def text_views(record: ArchiveRecord, views: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The distinct non-empty texts of a record for the configured views (free text only)."""
    out: list[str] = []
    for view in views:
        text = record.text(tuple(view))
        if text and text not in out:
            out.append(text)
    if not out:  # every configured view empty: fall back to whatever free text there is
        fallback = " ".join(t for _, t in record.sections)
        if fallback:
            out.append(fallback)
    return tuple(out)


def training_views(
    record: ArchiveRecord,
    views: Sequence[Sequence[str]],
    lexicon: EntityLexicon | None = None,
    entity_sections: Sequence[str] = ("caption",),
) -> tuple[str, ...]:
    """The texts a training image is paired with, one sampled per epoch: its text views, and
    with a lexicon its entity view (the entities named in ``entity_sections``) as one more."""
    texts = text_views(record, views)
    if lexicon is None:
        return texts
    entities = entity_view(record, lexicon, entity_sections)
    return texts + ((entities,) if entities and entities not in texts else ())


def entity_view(
    record: ArchiveRecord, lexicon: EntityLexicon, entity_sections: Sequence[str] = ("caption",)
) -> str:
    """The radiology entities named in ``entity_sections`` of a record ('' when none)."""
    return lexicon.view(record.text(tuple(entity_sections)))


def augment(
    images: torch.Tensor, generator: torch.Generator, strength: float = 1.0
) -> torch.Tensor:
    """Random affine and contrast jitter, 2D or 3D.

    At ``strength`` 1: scale 0.85-1.15, rotation ±10°, shift ±8%, contrast 0.8-1.2, brightness
    ±0.1; every range grows in proportion to ``strength`` (0 < strength <= 3), which the
    image-image views of ``optim.image_image_weight`` use to make their task harder.
    """
    if not 0.0 < strength <= 3.0:
        raise ValueError(f"augmentation strength {strength}: must be in (0, 3]")
    n, spatial = images.shape[0], images.ndim - 2
    g = generator
    scale = 1.0 / (1.0 - 0.15 * strength + 0.3 * strength * torch.rand(n, generator=g))
    shift = (torch.rand(n, spatial, generator=g) - 0.5) * 0.16 * strength
    theta = torch.zeros(n, spatial, spatial + 1)
    angle = (torch.rand(n, generator=g) - 0.5) * (20.0 * strength * torch.pi / 180.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if spatial == 3:
        theta[:, 2, 2] = scale
    theta[:, :, spatial] = shift
    x = images.float()
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x + 1.0, grid, align_corners=False, padding_mode="zeros")
    x = x - 1.0  # padding is background (-1)
    contrast = (1.0 - 0.2 * strength + 0.4 * strength * torch.rand(n, generator=g)).view(
        n, *([1] * (x.ndim - 1))
    )
    brightness = ((torch.rand(n, generator=g) - 0.5) * 0.2 * strength).view_as(contrast)
    return (x * contrast + brightness).clamp(-1.0, 1.0)
