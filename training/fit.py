"""Fitting the dual encoder: the contrastive training loop with checkpoint and resume.

One code path for a 2-core CPU and for several GPUs under ``torchrun``: batches are sharded by
rank, embeddings gathered across ranks for the loss, mixed precision on GPU. Every epoch ends
with a checkpoint (model, optimiser, scheduler, random states) written atomically, and a line
in ``train_log.jsonl`` / ``train_log.csv``; the weights with the lowest dev contrastive loss
(a label-free criterion: the dev labels are never used to pick the model) are kept apart,
and become the package when ``optim.select = "dev_loss"``; by default the last epoch's do.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from inference.models.dual_encoder import DualEncoder, projection_head
from inference.models.ensemble import DualEncoderEnsemble, FindingsNetwork
from inference.models.entities import load_lexicon
from inference.models.tokenizer import TextTokenizer, resolve_pretrained, train_wordpiece
from training.archive import ArchiveRecord, ReadSummary, read_archive
from training.config import TrainConfig
from training.datasets import (
    ImageSet,
    augment,
    entity_view,
    load_images,
    text_views,
    training_views,
)
from training.distributed import DistContext, all_gather_with_grad, mean_over_ranks
from training.loss import contrastive_loss, image_image_loss
from training.mlm import pretrain_mlm

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOG_JSONL = "train_log.jsonl"
LOG_CSV = "train_log.csv"
TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class TrainResult:
    model: FindingsNetwork
    tokenizer: TextTokenizer
    run_dir: Path
    best_epoch: int
    best_dev_loss: float
    epochs_run: int
    seconds: float
    summary: tuple[ReadSummary, ...]
    train_records: int
    precision: str = "float32"  # the training step's arithmetic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_tokenizer(config: TrainConfig, texts: list[str], run_dir: Path) -> TextTokenizer:
    """The tokenizer of the run: the pretrained encoder's own, or WordPiece trained on text."""
    saved = run_dir / TOKENIZER
    max_length = config.model.text.max_length
    if saved.is_file():  # resume: exactly the tokenizer the checkpoint was trained with
        return TextTokenizer.from_file(saved, max_length)
    if config.model.text.source == "pretrained":
        folder = resolve_pretrained(config.model.text.pretrained)
        tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", max_length)
    else:
        tokenizer = train_wordpiece(
            text_corpus(config, texts), config.model.text.vocab_size, max_length
        )
    return tokenizer


def text_corpus(config: TrainConfig, texts: list[str]) -> list[str]:
    """The free text a scratch encoder learns words from: the training texts, then the
    text-only report collections of ``data.extra_text``."""
    corpus = list(texts)
    for extra in config.data.extra_text:
        corpus += extra_corpus(extra)
    return corpus


def extra_corpus(path: Path) -> list[str]:
    """Free text of a text-only report archive (CSV: every text column but ids and terms)."""
    from training.archive.report_text import clean_text

    out: list[str] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for key in ("indication", "findings", "impression"):
                text = clean_text(row.get(key))
                if text:
                    out.append(text)
    return out


def caches_text(config: TrainConfig) -> bool:
    """Whether the text encoder's frozen part can be computed once per text and cached: a
    frozen encoder, or a pretrained one whose top ``trainable_layers`` layers alone train."""
    text = config.model.text
    return text.frozen or (text.source == "pretrained" and text.trainable_layers > 0)


class _TextBank:
    """All distinct training/dev texts, with cached encoder output where it is frozen.

    A frozen encoder with mean/[CLS] pooling caches one vector per text; attention pooling
    (trained on top of the frozen encoder) caches the token states (float16) and their mask;
    when the top layers of a pretrained encoder train, the states entering them are cached,
    so a step runs those layers only (MiniLM's top layer: about 1/6 of the encoder's work).
    """

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.index = {t: i for i, t in enumerate(texts)}
        self.features: torch.Tensor | None = None  # [N, H] or [N, L, H] token states
        self.mask: torch.Tensor | None = None  # [N, L] with token states

    def cache_features(
        self, model: DualEncoder, tokenizer: TextTokenizer, device: torch.device, folder: Path
    ) -> None:
        """Encode every text once with the frozen encoder, reusing an earlier run's cache."""
        text_cfg = model.config.text
        top = model.text_encoder.top_layers
        tokens = text_cfg.pooling == "attention" or top > 0
        cut = [f"below the top {top} layer(s)"] if top else []
        identity = [
            text_cfg.pretrained,
            str(text_cfg.max_length),
            text_cfg.pooling,
            *cut,
            *self.texts,
        ]
        key = hashlib.sha256("\x00".join(identity).encode()).hexdigest()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"text-features-{key[:16]}.pt"
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                self.features, self.mask = saved["features"], saved.get("mask")
                return
        feats, masks = [], []
        length = text_cfg.max_length
        was_training = model.text_encoder.training
        model.text_encoder.eval()  # cached like inference computes them: no dropout
        with torch.no_grad():
            for i in range(0, len(self.texts), 64):
                batch = tokenizer(self.texts[i : i + 64])
                ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
                if tokens:
                    states = model.text_encoder.lower_states(ids, mask).half().cpu()
                    pad = length - states.shape[1]
                    feats.append(torch.nn.functional.pad(states, (0, 0, 0, pad)))
                    masks.append(torch.nn.functional.pad(mask.cpu(), (0, pad)))
                else:
                    feats.append(model.text_features(ids, mask).float().cpu())
        model.text_encoder.train(was_training)
        self.features = torch.cat(feats)
        self.mask = torch.cat(masks) if tokens else None
        save_atomic({"key": key, "features": self.features, "mask": self.mask}, path)


def _encode_texts(
    model: DualEncoder,
    bank: _TextBank,
    ids: list[int],
    tokenizer: TextTokenizer,
    device: torch.device,
) -> torch.Tensor:
    if bank.features is not None and bank.mask is not None:
        mask = bank.mask[ids]
        used = int(mask.sum(1).max())
        states = bank.features[ids, :used].to(device).float()
        mask = mask[:, :used].to(device)
        pooled = model.text_encoder.pool(model.text_encoder.upper_states(states, mask), mask)
        return model.project_text(pooled)
    if bank.features is not None:
        return model.project_text(bank.features[ids].to(device))
    batch = tokenizer([bank.texts[i] for i in ids])
    return model.encode_text(batch.input_ids.to(device), batch.attention_mask.to(device))


def _entity_loss(
    model: DualEncoder,
    bank: _TextBank,
    img: torch.Tensor,
    entity_ids: list[int],
    text_ids: list[int],
    tokenizer: TextTokenizer,
    ctx: DistContext,
) -> torch.Tensor:
    """The image-entity contrastive loss of a batch, over the images whose text names an
    entity (``entity_ids`` -1: none). Every rank gathers the same shapes (an image without
    entities stands in with its sampled text and is then left out), as DDP needs."""
    ids = [e if e >= 0 else t for e, t in zip(entity_ids, text_ids, strict=True)]
    txt = _encode_texts(model, bank, ids, tokenizer, ctx.device)
    groups = all_gather_with_grad(torch.tensor(entity_ids, device=ctx.device), ctx)
    has = groups >= 0
    all_img = all_gather_with_grad(img.float(), ctx)[has]
    all_txt = all_gather_with_grad(txt.float(), ctx)[has]
    if all_img.shape[0] < 2:  # nothing to contrast: no loss, but keep the graph whole
        return 0.0 * txt.float().sum()
    return contrastive_loss(all_img, all_txt, model.scale(), groups[has])


def _param_groups(model: DualEncoder, config: TrainConfig) -> list[dict[str, Any]]:
    text, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("text_encoder.bert."):
            text.append(p)
        elif p.ndim < 2 or name == "logit_scale":
            no_decay.append(p)
        else:
            decay.append(p)
    o = config.optim
    groups = [
        {"params": decay, "lr": o.lr, "weight_decay": o.weight_decay},
        {"params": no_decay, "lr": o.lr, "weight_decay": 0.0},
    ]
    if text:
        # A pretrained encoder is fine-tuned gently (text_lr); one built from configuration
        # learns from scratch at the main rate.
        lr = o.text_lr if config.model.text.source == "pretrained" else o.lr
        groups.append({"params": text, "lr": lr, "weight_decay": o.weight_decay})
    return groups


class _WeightAverage:
    """An exponential moving average of the trained weights (and BatchNorm statistics).

    Averaging the last few hundred steps' weights smooths the noise of small-batch training on
    a small archive; the frozen text encoder is not tracked (it does not change). The decay
    ramps up as ``(1 + step) / (10 + step)`` so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, model: DualEncoder, decay: float) -> None:
        self.decay = decay
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        trained |= {n for n, b in model.named_buffers() if b.dtype.is_floating_point}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if k in trained}

    @torch.no_grad()
    def update(self, model: DualEncoder, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        state = model.state_dict()
        for k, v in self.shadow.items():
            v.mul_(d).add_(state[k].detach(), alpha=1.0 - d)

    def swap(self, model: DualEncoder) -> None:
        """Exchange the model's weights with the averaged ones (call again to swap back)."""
        state = model.state_dict()
        live = {k: state[k].detach().clone() for k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        self.shadow = live


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AMX or AVX512-BF16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The training step's autocast precision, or None for float32 throughout."""
    o = config.optim
    if device.type == "cuda":
        return torch.float16 if o.mixed_precision else None
    if device.type == "cpu" and o.cpu_bfloat16:
        if cpu_has_native_bfloat16():
            return torch.bfloat16
        print(
            "optim.cpu_bfloat16: this CPU has no native bfloat16 (AMX or AVX512-BF16); "
            "training in float32 instead, which is slower but gives the same kind of model",
            flush=True,
        )
    return None


def _set_layout(module: torch.nn.Module, layout: torch.memory_format) -> None:
    """Move a module's 4D weights to ``layout`` (``Module.to`` takes it; its stubs do not)."""
    module.to(memory_format=layout)  # type: ignore[call-overload]


def _to_input(images: torch.Tensor) -> torch.Tensor:
    """A 2D batch in the channels-last layout the image encoder was given for training."""
    return images.contiguous(memory_format=torch.channels_last) if images.ndim == 4 else images


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


@torch.no_grad()
def dev_metrics(
    model: DualEncoder,
    images: ImageSet,
    text_ids: list[int],
    bank: _TextBank,
    tokenizer: TextTokenizer,
    device: torch.device,
) -> dict[str, float]:
    """Label-free dev figures: contrastive loss and image-to-text recall@10 (same text = hit)."""
    model.eval()
    img = torch.cat(
        [
            model.encode_image(images.images[i : i + 64].float().to(device))
            for i in range(0, len(text_ids), 64)
        ]
    )
    txt = torch.cat(
        [
            _encode_texts(model, bank, text_ids[i : i + 64], tokenizer, device)
            for i in range(0, len(text_ids), 64)
        ]
    )
    groups = torch.tensor(text_ids, device=device)
    loss = float(contrastive_loss(img.float(), txt.float(), model.scale(), groups))
    sims = img.float() @ txt.float().t()
    top = sims.topk(min(10, sims.shape[1]), dim=1).indices
    hits = (groups[top] == groups[:, None]).any(1).float().mean()
    model.train()
    return {"dev_loss": loss, "dev_recall_at_10": float(hits)}


def _records(config: TrainConfig, split: str, summaries: list[ReadSummary]) -> list[ArchiveRecord]:
    archive = read_archive(config.data.archive, split=split, require_text=True)
    summaries.append(archive.summary)
    return list(archive.records)


def train(
    config: TrainConfig,
    run_dir: Path,
    ctx: DistContext,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train (or resume, when ``run_dir`` holds a checkpoint) and return the best model.

    ``cache_dir`` keeps the frozen text encoder's features between runs (default: the run's
    parent folder), keyed by the encoder and the exact texts.
    """
    from tqdm import tqdm

    if config.model.members > 1:
        return _train_members(config, run_dir, ctx, progress, cache_dir)
    started = time.monotonic()
    o = config.optim
    torch.set_num_threads(o.num_threads)
    seed_everything(o.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    summaries: list[ReadSummary] = []
    train_records = _records(config, config.data.train_split, summaries)
    if config.data.limit:
        train_records = train_records[: config.data.limit]
    # No dev split (an archive without one, such as cxr-covid-notes): no dev figures.
    dev_records = (
        _records(config, config.data.dev_split, summaries) if config.data.dev_split else []
    )
    if not config.data.dev_split:
        summaries.append(ReadSummary(source="no dev split"))
    image_cfg = config.model.image
    train_set = load_images(train_records, image_cfg, summaries[0])
    dev_set = load_images(dev_records, image_cfg, summaries[1])
    if len(train_set.records) < o.batch_size * ctx.world_size:
        raise ValueError(
            f"{len(train_set.records)} usable training records: fewer than one batch "
            f"({o.batch_size} x {ctx.world_size} processes)"
        )
    views = config.data.text_views
    lexicon = load_lexicon(config.data.entity_lexicon) if config.data.entity_lexicon else None
    # With optim.entity_loss_weight the entity view has a loss of its own instead of being
    # sampled among the text views.
    entity_lexicon = lexicon if lexicon is not None and o.entity_loss_weight > 0 else None
    sections = config.data.entity_sections
    train_views = [
        training_views(r, views, None if entity_lexicon else lexicon, sections)
        for r in train_set.records
    ]
    entity_texts = (
        [entity_view(r, entity_lexicon, sections) for r in train_set.records]
        if entity_lexicon is not None
        else []
    )
    # Dev pairs use the first view only (the caption for MedPix), a fixed target.
    dev_texts = [text_views(r, views[:1]) or text_views(r, views) for r in dev_set.records]
    train_texts = sorted({t for vs in train_views for t in vs} | {t for t in entity_texts if t})
    bank = _TextBank(sorted(set(train_texts) | {t for vs in dev_texts for t in vs}))
    train_view_ids = [[bank.index[t] for t in vs] for vs in train_views]
    entity_ids = [bank.index[t] if t else -1 for t in entity_texts]
    dev_ids = [bank.index[vs[0]] for vs in dev_texts]

    tokenizer = build_tokenizer(config, train_texts, run_dir)
    if ctx.is_main:
        tokenizer.save(run_dir / TOKENIZER)
    model = DualEncoder(config.model, vocab_size=tokenizer.vocab_size).to(ctx.device)
    checkpoint = run_dir / CHECKPOINT
    if o.mlm_epochs and not checkpoint.is_file():  # a resumed run has these weights already
        pretrain_mlm(
            model.text_encoder,
            tokenizer,
            text_corpus(config, train_texts),
            epochs=o.mlm_epochs,
            batch_size=o.mlm_batch_size,
            lr=o.mlm_lr,
            seed=o.seed,
            log_dir=run_dir if ctx.is_main else None,
            progress=progress and ctx.is_main,
        )
    if caches_text(config):
        bank.cache_features(
            model, tokenizer, ctx.device, cache_dir or run_dir.parent / "text-cache"
        )
    # SimCLR's projection head for the image-image loss: trained beside the model, kept in
    # the checkpoint, left out of the package (the shared space is the image-text one).
    ssl_head = (
        projection_head(
            config.model.image.feature_dim, config.model.embed_dim, config.model.image.feature_dim
        ).to(ctx.device)
        if o.image_image_weight > 0
        else None
    )
    trained = torch.nn.ModuleList([model] + ([ssl_head] if ssl_head is not None else []))
    # Under torchrun every rank holds the whole model; gradients are averaged by hand after the
    # backward pass (the loss already spans every rank's embeddings through the gather).
    if ctx.world_size > 1:
        for p in trained.parameters():
            torch.distributed.broadcast(p.data, src=0)
    param_groups = _param_groups(model, config)
    if ssl_head is not None:
        head_params = list(ssl_head.parameters())
        param_groups.append({"params": head_params, "weight_decay": o.weight_decay})
    optimizer = torch.optim.AdamW(param_groups, lr=o.lr)
    steps_per_epoch = len(train_set.records) // (o.batch_size * ctx.world_size)
    total_steps = steps_per_epoch * o.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, total_steps)
    )
    amp_dtype = autocast_dtype(config, ctx.device)
    use_amp = amp_dtype is not None
    # Loss scaling guards float16's narrow range; bfloat16 has float32's and needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if config.model.image.spatial_dims == 2:
        # NHWC: oneDNN's and cuDNN's fast convolution layout (1.3x on this CPU in float32).
        _set_layout(model.image_encoder, torch.channels_last)
    average = _WeightAverage(model, o.ema_decay) if o.ema_decay > 0 else None

    start_epoch, step, best_loss, best_epoch = 0, 0, math.inf, -1
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=ctx.device, weights_only=False)
        model.load_state_dict(state["model"])
        if ssl_head is not None:
            ssl_head.load_state_dict(state["ssl_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if average is not None and state.get("average") is not None:
            average.shadow = state["average"]
        start_epoch, step = state["epoch"] + 1, state["step"]
        best_loss, best_epoch = state["best_dev_loss"], state["best_epoch"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
    model.train()
    # The frozen text encoder stays in eval mode (no dropout) like its cached features.
    if config.model.text.frozen:
        model.text_encoder.eval()

    epoch_done = start_epoch
    for epoch in range(start_epoch, o.epochs):
        epoch_done = epoch + 1
        gen = torch.Generator().manual_seed(o.seed * 1000 + epoch)
        perm = torch.randperm(len(train_set.records), generator=gen).tolist()
        perm = perm[ctx.rank :: ctx.world_size]
        rng = random.Random(o.seed * 1000 + epoch + 7919 * ctx.rank)
        losses: list[float] = []
        seen, t0 = 0, time.monotonic()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{o.epochs}",
            disable=not (progress and ctx.is_main),
            leave=False,
        )
        for b in bar:
            idx = perm[b * o.batch_size : (b + 1) * o.batch_size]
            raw = train_set.images[idx]
            images = augment(raw, gen) if o.augment else raw
            if ssl_head is not None:  # the image-image pair: two harder views of each image
                strength = o.image_image_augment
                pair = torch.cat([augment(raw, gen, strength), augment(raw, gen, strength)])
                images = torch.cat([images, pair])
            images = _to_input(images.float().to(ctx.device, non_blocking=True))
            ids = [rng.choice(train_view_ids[i]) for i in idx]
            with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=use_amp):
                feats = model.image_encoder(images)
                img = model.project_image(feats[: len(idx)])
                txt = _encode_texts(model, bank, ids, tokenizer, ctx.device)
                groups = torch.tensor(ids, device=ctx.device)
                loss = contrastive_loss(
                    all_gather_with_grad(img.float(), ctx),
                    all_gather_with_grad(txt.float(), ctx),
                    model.scale(),
                    all_gather_with_grad(groups, ctx) if ctx.world_size > 1 else groups,
                )
                if entity_ids:
                    loss = loss + o.entity_loss_weight * _entity_loss(
                        model, bank, img, [entity_ids[i] for i in idx], ids, tokenizer, ctx
                    )
                if ssl_head is not None:
                    pair_emb = F.normalize(ssl_head(feats[len(idx) :]).float(), dim=-1)
                    loss = loss + o.image_image_weight * image_image_loss(
                        all_gather_with_grad(pair_emb[: len(idx)], ctx),
                        all_gather_with_grad(pair_emb[len(idx) :], ctx),
                        o.image_image_temperature,
                    )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if ctx.world_size > 1:
                _all_reduce_grads(trained, ctx)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 5.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if average is not None:
                average.update(model, step)
            seen += len(idx) * ctx.world_size
            losses.append(float(loss.detach()))
            rate = seen / max(1e-6, time.monotonic() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{rate:.0f}")
            if o.max_steps and step >= o.max_steps:
                break
        bar.close()
        if average is not None:  # the dev figures and best.pt are those of the average
            average.swap(model)
        dev = (
            dev_metrics(model, dev_set, dev_ids, bank, tokenizer, ctx.device)
            if dev_ids
            else {"dev_loss": math.nan, "dev_recall_at_10": math.nan}
        )
        if config.model.text.frozen:
            model.text_encoder.eval()
        entry = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": mean_over_ranks(float(np.mean(losses)) if losses else math.nan, ctx),
            **dev,
            "temperature": float(1.0 / model.scale().detach()),
            "lr": float(scheduler.get_last_lr()[0]),
            "images_per_s": seen / max(1e-6, time.monotonic() - t0),
            "elapsed_s": time.monotonic() - started,
        }
        if dev["dev_loss"] < best_loss:
            best_loss, best_epoch = dev["dev_loss"], epoch + 1
            if ctx.is_main:
                save_atomic(model.state_dict(), run_dir / BEST)
        if average is not None:
            average.swap(model)
        if ctx.is_main:
            append_log(run_dir, entry)
            save_atomic(
                {
                    "model": model.state_dict(),
                    "ssl_head": ssl_head.state_dict() if ssl_head is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "best_dev_loss": best_loss,
                    "best_epoch": best_epoch,
                    "torch_rng": torch.get_rng_state(),
                    "python_rng": random.getstate(),
                    "average": average.shadow if average is not None else None,
                },
                checkpoint,
            )
            if progress:
                print(
                    f"epoch {epoch + 1}: train loss {entry['train_loss']:.4f}, dev loss "
                    f"{dev['dev_loss']:.4f}, dev R@10 {dev['dev_recall_at_10']:.3f}, "
                    f"{entry['images_per_s']:.1f} img/s",
                    flush=True,
                )
        if ctx.world_size > 1:
            torch.distributed.barrier()
        if o.max_steps and step >= o.max_steps:
            break
    if o.select == "dev_loss" and (run_dir / BEST).is_file():
        model.load_state_dict(
            torch.load(run_dir / BEST, map_location=ctx.device, weights_only=True)
        )
    else:
        best_epoch = epoch_done
        if average is not None:
            average.swap(model)
    _set_layout(model.image_encoder, torch.contiguous_format)
    model.eval()
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        run_dir=run_dir,
        best_epoch=best_epoch,
        best_dev_loss=best_loss,
        epochs_run=o.epochs - start_epoch,
        seconds=time.monotonic() - started,
        summary=tuple(summaries),
        train_records=len(train_set.records),
        precision=f"{amp_dtype} autocast".removeprefix("torch.") if use_amp else "float32",
    )


def _train_members(
    config: TrainConfig, run_dir: Path, ctx: DistContext, progress: bool, cache_dir: Path | None
) -> TrainResult:
    """An ensemble: member ``i`` is exactly the single run of the same configuration with seed
    ``optim.seed + i``, trained in ``run_dir/member-<i>`` (each checkpoints and resumes on its
    own), one after the other; with ``model.member_image_sizes``, at member ``i``'s size."""
    results: list[TrainResult] = []
    for i in range(config.model.members):
        if progress and ctx.is_main:
            print(f"ensemble member {i + 1}/{config.model.members}", flush=True)
        member = replace(
            config,
            model=config.model.member(i),
            optim=replace(config.optim, seed=config.optim.seed + i),
        )
        cache = cache_dir or run_dir.parent / "text-cache"
        results.append(train(member, run_dir / f"member-{i}", ctx, progress, cache))
    models = [r.model for r in results if isinstance(r.model, DualEncoder)]
    ensemble = DualEncoderEnsemble(config.model, members=models).eval()
    first = results[0]
    return TrainResult(
        model=ensemble,
        tokenizer=first.tokenizer,
        run_dir=run_dir,
        best_epoch=first.best_epoch,
        best_dev_loss=min(r.best_dev_loss for r in results),
        epochs_run=sum(r.epochs_run for r in results),
        seconds=sum(r.seconds for r in results),
        summary=first.summary,
        train_records=first.train_records,
        precision=first.precision,
    )


def _all_reduce_grads(model: torch.nn.Module, ctx: DistContext) -> None:
    """Average gradients over ranks (the loss already saw every rank's embeddings)."""
    for p in model.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= ctx.world_size


def append_log(run_dir: Path, entry: dict[str, Any]) -> None:
    with (run_dir / LOG_JSONL).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    csv_path = run_dir / LOG_CSV
    new = not csv_path.is_file()
    with csv_path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(entry))
        if new:
            writer.writeheader()
        writer.writerow(entry)
