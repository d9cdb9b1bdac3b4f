"""The segmentation training loop: Dice + cross-entropy on foreground-weighted random crops.

Checkpoint and resume: the network, the optimiser and the finished epoch go into
``run_dir/checkpoint.pt`` after each epoch. Every epoch's random draws (crops, augmentations,
dropout) start from a seed derived from ``optim.seed`` and the epoch, so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have. Each epoch appends a row to
``train_log.jsonl`` and ``train_log.csv``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.losses.dice import DiceCELoss

from inference.segmentation.network import build_network
from training.archive.label_volumes import read_pairs
from training.fit import CHECKPOINT, append_log, lr_factor, save_atomic
from training.segmentation.config import SegmentationTrainConfig
from training.segmentation.data import batch_of, crop_transform, on_model_grid


@dataclass(frozen=True)
class SegmentationTrainResult:
    network: torch.nn.Module  # eval mode, CPU
    run_dir: Path
    epochs_run: int  # in this call (0 when the checkpoint was already complete)
    steps: int
    seconds: float  # of this call
    final_loss: float
    train_volumes: tuple[str, ...]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random draws (independent of where a run was resumed)."""
    return seed * 100_003 + epoch


def train_segmentation(
    config: SegmentationTrainConfig,
    run_dir: Path,
    progress: bool = True,
    epochs_this_call: int | None = None,
) -> SegmentationTrainResult:
    """Train (or resume) the network of ``config`` on its training split.

    ``epochs_this_call``: stop after this many epochs (a time-boxed run that a later call
    resumes from its checkpoint); the schedule is still that of ``optim.epochs``.
    """
    o = config.optim
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(o.num_threads)
    torch.manual_seed(o.seed)
    items = read_pairs(config.data.archive, config.data.splits[config.data.train_split])
    grids = [on_model_grid(item, config.model) for item in items]
    network = build_network(config.model)
    optimiser = torch.optim.AdamW(network.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    total = o.epochs * o.steps_per_epoch
    if o.max_steps:
        total = min(total, o.max_steps)
    start_epoch, step, final_loss = 0, 0, float("nan")
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        start_epoch, step, final_loss = state["epoch"], state["step"], state["loss"]
        if progress:
            print(f"resuming {run_dir} after epoch {start_epoch} (step {step})", flush=True)
    started = time.monotonic()
    last_epoch = (
        o.epochs if epochs_this_call is None else min(o.epochs, start_epoch + epochs_this_call)
    )
    for epoch in range(start_epoch, last_epoch):
        if step >= total:
            break
        seed = epoch_seed(o.seed, epoch)
        torch.manual_seed(seed)
        transform = crop_transform(config.model, config.augment, o.batch_size)
        transform.set_random_state(seed=seed)
        network.train()
        losses: list[float] = []
        epoch_started = time.monotonic()
        for i in range(o.steps_per_epoch):
            if step >= total:
                break
            crops = transform(grids[(epoch * o.steps_per_epoch + i) % len(grids)])
            images, labels = batch_of(crops)
            for group in optimiser.param_groups:
                group["lr"] = o.lr * lr_factor(step, o.warmup_steps, total)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(images), labels)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
        final_loss = sum(losses) / len(losses)
        seconds = time.monotonic() - epoch_started
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": round(final_loss, 6),
            "lr": optimiser.param_groups[0]["lr"],
            "crops_per_s": round(len(losses) * o.batch_size / max(seconds, 1e-9), 3),
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        append_log(run_dir, entry)
        save_atomic(
            {
                "network": network.state_dict(),
                "optimiser": optimiser.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "loss": final_loss,
            },
            checkpoint,
        )
        if progress:
            print(
                f"epoch {epoch + 1}/{o.epochs}: loss {final_loss:.4f}, "
                f"{entry['crops_per_s']:.2f} crops/s",
                flush=True,
            )
    network.eval()
    return SegmentationTrainResult(
        network=network,
        run_dir=run_dir,
        epochs_run=max(0, min(o.epochs, math.ceil(step / o.steps_per_epoch)) - start_epoch),
        steps=step,
        seconds=time.monotonic() - started,
        final_loss=final_loss,
        train_volumes=tuple(item.name for item in items),
    )
