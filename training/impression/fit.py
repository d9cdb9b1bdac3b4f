"""Fitting the impression generator: teacher forcing with checkpoint and resume.

The image encoder starts from a findings package's (``[init]``). Frozen (the tiny preset), its
features are computed once per image and the decoder trains on them; fine-tuned, every step
runs it on augmented images. The decoder may first learn the language alone (``lm_epochs``:
the warm start on the training targets and text-only reports). Each epoch ends with the
label-free dev loss, a line in ``train_log.jsonl``/``.csv`` and a checkpoint written
atomically; a run folder with a checkpoint resumes, and gives the weights an uninterrupted
run gives. The package is the weights after the last epoch: nothing is selected on dev.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from inference.impression.model import ImpressionModel, load_language_model
from inference.impression.retrieval import RetrievalBank
from inference.impression.tokenizer import DecoderTokenizer
from inference.models.tokenizer import train_wordpiece
from inference.packages import load_findings_package
from training.archive import ReadSummary
from training.datasets import augment
from training.fit import append_log, extra_corpus, lr_factor, save_atomic, seed_everything
from training.impression.config import ImpressionTrainConfig
from training.impression.dataset import ImpressionSet, read_impression_set

CHECKPOINT = "checkpoint.pt"
TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class ImpressionTrainResult:
    model: ImpressionModel
    tokenizer: DecoderTokenizer | None  # None: retrieval only
    bank: RetrievalBank
    seconds: float
    train_records: int
    summary: tuple[ReadSummary, ...]
    epochs_run: int


def build_decoder_tokenizer(
    config: ImpressionTrainConfig, texts: list[str], run_dir: Path
) -> DecoderTokenizer:
    """The run's decoder tokenizer: a language model's own (qformer), else the WordPiece
    vocabulary built from the training targets and ``data.extra_text`` (deterministic; the
    run folder keeps it, so a resumed run tokenizes as the checkpoint was trained)."""
    d = config.model.decoder
    if d.kind == "qformer":
        path = Path(d.language_model) / TOKENIZER
        return DecoderTokenizer.from_file(path, d.bos_token, d.eos_token, d.pad_token, d.max_length)
    saved = run_dir / TOKENIZER
    if not saved.is_file():
        wordpiece = train_wordpiece(texts, d.vocab_size, d.max_length)
        wordpiece.save(saved)
    return DecoderTokenizer.from_file(saved, d.bos_token, d.eos_token, d.pad_token, d.max_length)


def init_image_encoder(model: ImpressionModel, config: ImpressionTrainConfig) -> None:
    """Copy the image encoder of ``init.findings_package``'s member into ``model``."""
    package = config.init.findings_package
    if package is None:
        return
    findings = load_findings_package(package)
    encoder = findings.model.image_encoders[config.init.findings_member]
    model.image_encoder.load_state_dict(encoder.state_dict())


@torch.no_grad()
def encoder_features(
    model: ImpressionModel, images: torch.Tensor, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid (float16, to halve memory) and pooled features of every image, in eval mode."""
    was_training = model.image_encoder.training
    model.image_encoder.eval()
    grids, pooled = [], []
    for i in range(0, images.shape[0], batch_size):
        g, p = model.image_features(images[i : i + batch_size].float())
        grids.append(g.half())
        pooled.append(p.float())
    model.image_encoder.train(was_training)
    return torch.cat(grids), torch.cat(pooled)


def _param_groups(model: ImpressionModel, config: ImpressionTrainConfig) -> list[dict[str, Any]]:
    o = config.optim
    image, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("image_encoder."):
            image.append(p)
        elif p.ndim < 2 or name == "positions" or "wpe" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": o.lr, "weight_decay": o.weight_decay},
        {"params": no_decay, "lr": o.lr, "weight_decay": 0.0},
    ]
    if image:
        groups.append({"params": image, "lr": o.image_lr, "weight_decay": o.weight_decay})
    return groups


def _batch_ids(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's token rows cut to its longest text."""
    used = int(mask.sum(1).max())
    return ids[:, :used], mask[:, :used]


def _token_loss(
    model: ImpressionModel,
    tokens: torch.Tensor | None,
    ids: torch.Tensor,
    mask: torch.Tensor,
    smoothing: float,
) -> torch.Tensor:
    logits = model.next_token_logits(tokens, ids, mask)
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), target.flatten(), label_smoothing=smoothing
    )


def warm_start(
    model: ImpressionModel,
    tokenizer: DecoderTokenizer,
    texts: list[str],
    config: ImpressionTrainConfig,
    run_dir: Path,
    progress: bool,
) -> None:
    """Language modelling on text alone (no cross-attention input) for ``lm_epochs``."""
    o = config.optim
    batch = tokenizer(texts)
    params = [
        p for n, p in model.named_parameters() if n.startswith("decoder.") and p.requires_grad
    ]
    optimizer = torch.optim.AdamW(params, lr=o.lm_lr, weight_decay=o.weight_decay)
    steps_per_epoch = max(1, len(texts) // o.batch_size)
    total = steps_per_epoch * o.lm_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, min(o.warmup_steps, total // 10 + 1), total)
    )
    model.train()
    for epoch in range(o.lm_epochs):
        started = time.monotonic()
        gen = torch.Generator().manual_seed(o.seed * 1000 + 500 + epoch)
        perm = torch.randperm(len(texts), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * o.batch_size : (b + 1) * o.batch_size]
            ids, mask = _batch_ids(batch.input_ids[idx], batch.attention_mask[idx])
            loss = _token_loss(model, None, ids, mask, o.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        seconds = time.monotonic() - started
        # The same columns as the image-conditioned epochs' (one CSV log).
        entry = {
            "phase": "warm start",
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "train_loss": float(np.mean(losses)),
            "dev_loss": math.nan,
            "lr": float(scheduler.get_last_lr()[0]),
            "images_per_s": steps_per_epoch * o.batch_size / max(1e-6, seconds),
            "elapsed_s": seconds,
        }
        append_log(run_dir, entry)
        if progress:
            print(
                f"warm start {epoch + 1}/{o.lm_epochs}: loss {entry['train_loss']:.4f}", flush=True
            )


@torch.no_grad()
def dev_loss(
    model: ImpressionModel,
    grid: torch.Tensor,
    pooled: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    batch_size: int = 64,
) -> float:
    """Mean teacher-forced token loss on dev (label-free: the dev texts, not their labels)."""
    if not grid.shape[0]:
        return math.nan
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, grid.shape[0], batch_size):
        b_ids, b_mask = _batch_ids(ids[i : i + batch_size], mask[i : i + batch_size])
        tokens = model.condition(grid[i : i + batch_size].float(), pooled[i : i + batch_size])
        logits = model.next_token_logits(tokens, b_ids, b_mask)
        target = b_ids[:, 1:].masked_fill(b_mask[:, 1:] == 0, -100)
        total += float(
            F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), reduction="sum")
        )
        count += int((target != -100).sum())
    model.train(was_training)
    return total / max(1, count)


def train_impression(
    config: ImpressionTrainConfig, run_dir: Path, progress: bool = True
) -> ImpressionTrainResult:
    """Train (or resume from ``run_dir/checkpoint.pt``) and return the model with its
    tokenizer and the retrieval bank of the training images."""
    started = time.monotonic()
    o = config.optim
    torch.set_num_threads(o.num_threads)
    seed_everything(o.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    d = config.data
    image_cfg = config.model.image
    train_set = read_impression_set(d.archive, d.train_split, d.target_sections, image_cfg, d.limit)
    dev_set = (
        read_impression_set(d.archive, d.dev_split, d.target_sections, image_cfg, d.limit)
        if d.dev_split
        else None
    )
    summaries = (train_set.summary, *((dev_set.summary,) if dev_set else ()))
    if len(train_set.records) < o.batch_size:
        raise ValueError(
            f"{len(train_set.records)} usable training records: fewer than one batch "
            f"({o.batch_size})"
        )
    generates = config.model.decoder.kind != "none"
    extra = [t for path in d.extra_text for t in extra_corpus(path)]
    tokenizer = (
        build_decoder_tokenizer(config, [*train_set.targets, *extra], run_dir)
        if generates
        else None
    )
    language_model = (
        load_language_model(config.model.decoder.language_model)
        if config.model.decoder.kind == "qformer"
        else None
    )
    model = ImpressionModel(
        config.model,
        vocab_size=tokenizer.vocab_size if tokenizer is not None else None,
        language_model=language_model,
    )
    init_image_encoder(model, config)
    if not o.train_image_encoder:
        model.image_encoder.requires_grad_(False)
    epochs_run = 0
    if generates and tokenizer is not None:
        epochs_run = _fit(model, tokenizer, train_set, dev_set, extra, config, run_dir, progress)
    model.eval()
    _, pooled = encoder_features(model, train_set.images)
    bank = RetrievalBank(
        embeddings=model.retrieval_embedding(pooled),
        texts=train_set.targets,
        keys=tuple(r.key for r in train_set.records),
        case_ids=tuple(train_set.case_ids),
    )
    return ImpressionTrainResult(
        model=model,
        tokenizer=tokenizer,
        bank=bank,
        seconds=time.monotonic() - started,
        train_records=len(train_set.records),
        summary=summaries,
        epochs_run=epochs_run,
    )


def _fit(
    model: ImpressionModel,
    tokenizer: DecoderTokenizer,
    train_set: ImpressionSet,
    dev_set: ImpressionSet | None,
    extra: list[str],
    config: ImpressionTrainConfig,
    run_dir: Path,
    progress: bool,
) -> int:
    """The image-conditioned epochs (after the warm start); returns how many ran here."""
    o = config.optim
    started = time.monotonic()
    checkpoint = run_dir / CHECKPOINT
    if o.lm_epochs and not checkpoint.is_file():  # a resumed run has these weights already
        warm_start(model, tokenizer, [*train_set.targets, *extra], config, run_dir, progress)
    targets = tokenizer(list(train_set.targets))
    frozen = not o.train_image_encoder
    train_grid, train_pooled = encoder_features(model, train_set.images) if frozen else (None, None)
    if dev_set is not None and len(dev_set.records):
        dev_grid, dev_pooled = encoder_features(model, dev_set.images)
        dev_tokens = tokenizer(list(dev_set.targets))
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=o.lr)
    steps_per_epoch = len(train_set.records) // o.batch_size
    total_steps = steps_per_epoch * o.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, total_steps)
    )
    start_epoch, step = 0, 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
    model.train()
    if frozen:  # BatchNorm statistics stay those of the findings model
        model.image_encoder.eval()
    ran = 0
    for epoch in range(start_epoch, o.epochs):
        t0 = time.monotonic()
        gen = torch.Generator().manual_seed(o.seed * 1000 + epoch)
        perm = torch.randperm(len(train_set.records), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * o.batch_size : (b + 1) * o.batch_size]
            ids, mask = _batch_ids(targets.input_ids[idx], targets.attention_mask[idx])
            if train_grid is not None and train_pooled is not None:
                grid, pooled = train_grid[idx].float(), train_pooled[idx]
            else:
                grid, pooled = model.image_features(augment(train_set.images[idx], gen))
            tokens = model.condition(grid, pooled)
            loss = _token_loss(model, tokens, ids, mask, o.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            if o.max_steps and step >= o.max_steps:
                break
        ran += 1
        if not frozen and dev_set is not None and len(dev_set.records):
            # The encoder moved: the dev features are recomputed.
            dev_grid, dev_pooled = encoder_features(model, dev_set.images)
        dev = (
            dev_loss(model, dev_grid, dev_pooled, dev_tokens.input_ids, dev_tokens.attention_mask)
            if dev_set is not None and len(dev_set.records)
            else math.nan
        )
        if frozen:
            model.image_encoder.eval()
        seconds = time.monotonic() - t0
        entry = {
            "phase": "image-conditioned",
            "epoch": epoch + 1,
            "step": step,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "dev_loss": dev,
            "lr": float(scheduler.get_last_lr()[0]),
            "images_per_s": len(losses) * o.batch_size / max(1e-6, seconds),
            "elapsed_s": time.monotonic() - started,
        }
        append_log(run_dir, entry)
        save_atomic(
            {
                "model": model.trained_state(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": step,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            checkpoint,
        )
        if progress:
            print(
                f"epoch {epoch + 1}/{o.epochs}: train loss {entry['train_loss']:.4f}, "
                f"dev loss {dev:.4f}, {entry['images_per_s']:.0f} img/s",
                flush=True,
            )
        if o.max_steps and step >= o.max_steps:
            break
    return ran
