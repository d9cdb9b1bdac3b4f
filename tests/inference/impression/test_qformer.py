"""The query-transformer route into a frozen causal language model from a local folder,
with a tiny GPT-2 built from configuration (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.impression.generate import generate_ids
from inference.impression.model import (
    ImpressionModel,
    language_model_hash,
    load_language_model,
)
from inference.impression.tokenizer import DecoderTokenizer
from inference.models.config import ModelConfigError

from .conftest import CAPTIONS, tiny_config


def save_tiny_gpt2(folder: Path, tokenizer: DecoderTokenizer) -> Path:
    """A 1-layer GPT-2 of width 24 and the test tokenizer, saved like a downloaded model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=64,
        n_embd=24,
        n_layer=1,
        n_head=2,
        bos_token_id=None,
        eos_token_id=None,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save(folder / "tokenizer.json")
    return folder


def test_qformer_prefix_trains_and_the_language_model_stays_frozen(
    tmp_path: Path, tokenizer: DecoderTokenizer
) -> None:
    folder = save_tiny_gpt2(tmp_path / "lm", tokenizer)
    lm = load_language_model(folder)
    config = tiny_config(kind="qformer", language_model=str(folder), num_queries=4)
    model = ImpressionModel(config, language_model=lm)
    model.train()
    assert model.language_model is not None and not model.language_model.training
    images = torch.randn(2, 1, 32, 32)
    grid, pooled = model.image_features(images)
    prefix = model.qformer(model.condition(grid, pooled))  # type: ignore[misc]
    assert prefix.shape == (2, 4, 24)
    batch = tokenizer(CAPTIONS[:2])
    loss = model.loss(grid, pooled, batch.input_ids, batch.attention_mask)
    loss.backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is None for p in model.language_model.parameters())
    assert model.qformer is not None
    assert all(p.grad is not None for p in model.qformer.parameters())
    assert not any(k.startswith("language_model.") for k in model.trained_state())
    model.eval()
    ids = generate_ids(model, tokenizer, grid, pooled)
    assert len(ids) == 2 and all(len(r) <= config.generation.max_new_tokens for r in ids)
    assert language_model_hash(folder) == language_model_hash(folder)


def test_language_model_must_be_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="not a local folder"):
        load_language_model(tmp_path / "gpt2")
    with pytest.raises(ModelConfigError, match="needs its language model"):
        ImpressionModel(tiny_config(kind="qformer", language_model="somewhere"))
