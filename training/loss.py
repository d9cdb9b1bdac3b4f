"""The symmetric contrastive (CLIP / ConVIRT) loss, aware of repeated texts in a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of image→text and text→image cross-entropy over in-batch similarities.

    Parameters
    ----------
    image_emb, text_emb:
        ``[B, D]`` unit-norm embeddings; row ``i`` of each is a matching pair.
    scale:
        The logit scale (``1 / temperature``).
    groups:
        Optional ``[B]`` ids: pairs whose texts are identical (several images of one case
        with the same report) share an id, and each counts the others as positives too
        instead of as false negatives: the loss of a row is ``-log`` of the probability mass
        on all its positives, so such a batch can still reach zero loss.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(
            f"embeddings must both be [batch, dim]; got {tuple(image_emb.shape)} and "
            f"{tuple(text_emb.shape)}"
        )
    logits = scale * image_emb @ text_emb.t()
    n = logits.shape[0]
    if groups is None:
        positive = torch.eye(n, device=logits.device, dtype=torch.bool)
    else:
        positive = groups[:, None] == groups[None, :]
    neg_inf = torch.finfo(logits.dtype).min
    log_p_i = F.log_softmax(logits, dim=1).masked_fill(~positive, neg_inf)
    log_p_t = F.log_softmax(logits.t(), dim=1).masked_fill(~positive.t(), neg_inf)
    loss_i = -torch.logsumexp(log_p_i, dim=1).mean()
    loss_t = -torch.logsumexp(log_p_t, dim=1).mean()
    return (loss_i + loss_t) / 2


def image_image_loss(
    view_a: torch.Tensor, view_b: torch.Tensor, temperature: float
) -> torch.Tensor:
    """SimCLR's NT-Xent loss between two augmented views of the same images.

    Each of the ``2B`` embeddings has its other view as the positive and the remaining
    ``2B - 2`` embeddings of both views as negatives (unlike :func:`contrastive_loss`, whose
    negatives come from the other modality only), at a fixed ``temperature``.

    Parameters
    ----------
    view_a, view_b:
        ``[B, D]`` unit-norm embeddings; row ``i`` of each comes from image ``i``.
    """
    if view_a.shape != view_b.shape or view_a.ndim != 2 or view_a.shape[0] < 2:
        raise ValueError(
            f"views must both be [batch >= 2, dim]; got {tuple(view_a.shape)} and "
            f"{tuple(view_b.shape)}"
        )
    n = view_a.shape[0]
    z = torch.cat([view_a, view_b])
    logits = (z @ z.t()) / temperature
    self_mask = torch.eye(2 * n, device=z.device, dtype=torch.bool)
    logits = logits.masked_fill(self_mask, torch.finfo(logits.dtype).min)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)
