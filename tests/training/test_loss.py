"""The contrastive loss: low for aligned pairs, symmetric, repeated texts are not negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.loss import contrastive_loss, image_image_loss


def test_aligned_pairs_have_lower_loss_than_shuffled() -> None:
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(20.0)
    aligned = contrastive_loss(emb, emb, scale)
    shuffled = contrastive_loss(emb, emb.roll(1, 0), scale)
    assert aligned < shuffled
    assert float(aligned) < 0.1


def test_symmetric_and_shape_checked() -> None:
    torch.manual_seed(1)
    a, b = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    s = torch.tensor(10.0)
    assert torch.allclose(contrastive_loss(a, b, s), contrastive_loss(b, a, s))
    with pytest.raises(ValueError, match="embeddings"):
        contrastive_loss(a, b[:5], s)


def test_identical_texts_share_the_positive() -> None:
    # Two images of one case with one report text: without groups the pair can never be
    # told apart (loss stays near log 2 on those rows); with groups both texts are positives
    # for both images and the loss goes to zero.
    img = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    s = torch.tensor(50.0)
    plain = contrastive_loss(img, img.clone(), s)
    grouped = contrastive_loss(img, img.clone(), s, groups=torch.tensor([0, 0, 1]))
    assert float(grouped) < 1e-6
    assert float(plain) == pytest.approx(2 / 3 * math.log(2), rel=1e-3)


def test_gradient_reaches_the_temperature() -> None:
    emb = F.normalize(torch.randn(4, 8), dim=-1)
    logit_scale = torch.tensor(2.0, requires_grad=True)
    contrastive_loss(emb, emb.roll(1, 0), logit_scale.exp()).backward()  # type: ignore[no-untyped-call]
    assert logit_scale.grad is not None and float(logit_scale.grad) != 0.0


def test_image_image_loss_rewards_matching_views() -> None:
    torch.manual_seed(2)
    a = F.normalize(torch.randn(8, 16), dim=-1)
    noisy = F.normalize(a + 0.05 * torch.randn(8, 16), dim=-1)
    matched = image_image_loss(a, noisy, 0.1)
    shuffled = image_image_loss(a, noisy.roll(1, 0), 0.1)
    assert matched < shuffled
    assert float(matched) < 0.1


def test_image_image_loss_counts_same_view_negatives() -> None:
    # Views that agree perfectly but collapse every image to one point: a cross-view-only
    # loss would be log(B); NT-Xent also sees the same-view copies, log(2B - 1).
    z = F.normalize(torch.ones(4, 3), dim=-1)
    loss = image_image_loss(z, z.clone(), 0.5)
    assert float(loss) == pytest.approx(math.log(7), rel=1e-4)
    with pytest.raises(ValueError, match="views"):
        image_image_loss(z, z[:3], 0.5)
