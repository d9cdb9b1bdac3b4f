"""Masked-language-model pretraining of a text encoder built from configuration.

BERT's objective on report text before the contrastive training: 15% of the word pieces are
chosen, of those 80% replaced by ``[MASK]``, 10% by a random piece and 10% kept, and the
encoder learns to predict them. The corpus is free text only (the archive's training text and
text-only report collections such as ``../shared/data/iu-xray-reports``); the prediction head
is thrown away afterwards, the encoder keeps what it learnt.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from inference.models.text_encoder import TextEncoder
from inference.models.tokenizer import TextTokenizer

MASK_PROBABILITY = 0.15
IGNORE = -100
LOG = "mlm_log.jsonl"


@dataclass(frozen=True)
class MlmResult:
    texts: int
    epochs: int
    first_loss: float  # mean masked-token cross-entropy of the first epoch
    last_loss: float  # ... and of the last


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer: TextTokenizer,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``(inputs, labels)`` with labels ``-100`` where nothing is predicted."""
    if tokenizer.mask_id is None:
        raise ValueError("the tokenizer has no [MASK] token: masked-language pretraining needs it")
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token in ("[PAD]", "[CLS]", "[SEP]"):
        special |= input_ids == tokenizer.token_id(token)
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = (draw < MASK_PROBABILITY) & ~special & attention_mask.bool()
    labels = input_ids.masked_fill(~chosen, IGNORE)
    how = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(chosen & (how < 0.8), tokenizer.mask_id)
    swap = chosen & (how >= 0.8) & (how < 0.9)
    random_ids = torch.randint(tokenizer.vocab_size, input_ids.shape, generator=generator)
    inputs = torch.where(swap, random_ids, inputs)
    return inputs, labels


def pretrain_mlm(
    encoder: TextEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    log_dir: Path | None = None,
    progress: bool = True,
) -> MlmResult:
    """Train ``encoder`` (in place) to predict masked word pieces of ``texts``."""
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    if not texts:
        raise ValueError("masked-language pretraining needs text")
    device = next(encoder.parameters()).device
    head = BertOnlyMLMHead(encoder.bert.config).to(device)  # type: ignore[no-untyped-call]
    params = [p for p in encoder.bert.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(texts) / batch_size)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1)))
    )
    generator = torch.Generator().manual_seed(seed)
    was_training = encoder.training
    encoder.train()
    losses: list[float] = []
    started = time.monotonic()
    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=generator).tolist()
        total, count = 0.0, 0
        for b in range(0, len(order), batch_size):
            batch = tokenizer([texts[i] for i in order[b : b + batch_size]])
            inputs, labels = mask_tokens(
                batch.input_ids, batch.attention_mask, tokenizer, generator
            )
            if not (labels != IGNORE).any():
                continue
            states = encoder.token_states(inputs.to(device), batch.attention_mask.to(device))
            # The vocabulary projection only where a piece is predicted (~15% of positions):
            # over every position it costs more than the encoder itself.
            chosen = labels.to(device) != IGNORE
            loss = F.cross_entropy(head(states[chosen]), labels.to(device)[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            count += 1
        losses.append(total / max(1, count))
        entry = {
            "epoch": epoch + 1,
            "mlm_loss": losses[-1],
            "texts": len(texts),
            "elapsed_s": time.monotonic() - started,
        }
        if log_dir is not None:
            with (log_dir / LOG).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        if progress:
            print(f"MLM epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}", flush=True)
    encoder.train(was_training)
    return MlmResult(len(texts), epochs, losses[0], losses[-1])
