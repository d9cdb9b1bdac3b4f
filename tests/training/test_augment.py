"""Augmentation: the usual ranges at strength 1, wider ones at a higher strength."""

from __future__ import annotations

import pytest
import torch

from training.datasets import augment


def _images() -> torch.Tensor:
    x = -torch.ones(64, 1, 32, 32)
    x[:, :, 8:24, 8:24] = 0.5  # a bright square on background
    return x


def test_stronger_augmentation_moves_images_further() -> None:
    x = _images()
    mild = augment(x, torch.Generator().manual_seed(0), strength=1.0)
    strong = augment(x, torch.Generator().manual_seed(0), strength=2.5)
    assert mild.shape == strong.shape == x.shape
    assert float((strong - x).abs().mean()) > 1.3 * float((mild - x).abs().mean())
    assert float(strong.min()) >= -1.0 and float(strong.max()) <= 1.0


def test_same_generator_same_views_and_strength_is_checked() -> None:
    x = _images()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="strength"):
        augment(x, torch.Generator(), strength=0.0)
