"""The impression model: shapes, seeded determinism, generation and its refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from inference.impression.generate import (
    EmptyImpressionError,
    clean_impression,
    generate_ids,
    generate_texts,
)
from inference.impression.model import ImpressionModel
from inference.impression.retrieval import RetrievalBank, RetrievalBankError
from inference.impression.tokenizer import DecoderTokenizer
from inference.models.config import ModelConfigError

from .conftest import CAPTIONS, tiny_config


def _model(tokenizer: DecoderTokenizer, seed: int = 0) -> ImpressionModel:
    torch.manual_seed(seed)
    return ImpressionModel(tiny_config(), vocab_size=tokenizer.vocab_size).eval()


def test_shapes(tokenizer: DecoderTokenizer) -> None:
    model = _model(tokenizer)
    images = torch.randn(3, 1, 32, 32)
    grid, pooled = model.image_features(images)
    # 32 px: stride 2 conv, max pool, three stride-2 stages: a 1x1 grid of 16 channels.
    assert grid.shape == (3, model.grid_tokens, 16) and pooled.shape == (3, 16)
    assert torch.allclose(pooled, model.image_encoder(images), atol=1e-6)
    tokens = model.condition(grid, pooled)
    assert tokens.shape == (3, model.grid_tokens + 1, 16)
    batch = tokenizer(CAPTIONS[:3])
    logits = model.next_token_logits(tokens, batch.input_ids, batch.attention_mask)
    assert logits.shape == (*batch.input_ids.shape, tokenizer.vocab_size)
    loss = model.loss(grid, pooled, batch.input_ids, batch.attention_mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    ids = generate_ids(model, tokenizer, grid, pooled)
    assert len(ids) == 3 and all(len(r) <= model.config.generation.max_new_tokens for r in ids)
    assert all(tokenizer.bos_id not in r and tokenizer.pad_id not in r for r in ids)


def test_larger_images_give_more_feature_cells(tokenizer: DecoderTokenizer) -> None:
    config = tiny_config()
    import dataclasses

    image = dataclasses.replace(config.image, image_size=(128, 128))
    model = ImpressionModel(dataclasses.replace(config, image=image), tokenizer.vocab_size)
    grid, _ = model.image_features(torch.randn(1, 1, 128, 128))
    assert model.grid_tokens == 16 and grid.shape[1] == 16  # a 4x4 grid


def test_same_seed_same_model_and_text(tokenizer: DecoderTokenizer) -> None:
    images = torch.randn(2, 1, 32, 32)
    texts = []
    for _ in range(2):
        model = _model(tokenizer, seed=3)
        grid, pooled = model.image_features(images)
        texts.append(generate_ids(model, tokenizer, grid, pooled))
    assert texts[0] == texts[1]
    other = _model(tokenizer, seed=4)
    a, b = _model(tokenizer, seed=3).state_dict(), other.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_an_empty_impression_is_refused(tokenizer: DecoderTokenizer) -> None:
    model = _model(tokenizer)
    # Make the end token win at every position: the final norm outputs a constant vector v,
    # and only the end token's (tied) embedding points along it.
    decoder: Any = model.decoder
    assert decoder is not None
    with torch.no_grad():
        decoder.transformer.ln_f.weight.zero_()
        decoder.transformer.ln_f.bias.fill_(1.0)
        decoder.transformer.wte.weight.zero_()
        decoder.transformer.wte.weight[tokenizer.eos_id] = 10.0
    import dataclasses

    no_minimum = dataclasses.replace(model.config.generation, min_new_tokens=0)
    grid, pooled = model.image_features(torch.randn(1, 1, 32, 32))
    assert generate_ids(model, tokenizer, grid, pooled, no_minimum) == [[]]
    with pytest.raises(EmptyImpressionError, match="image-7"):
        generate_texts(model, tokenizer, grid, pooled, ["image-7"], no_minimum)


def test_cleaning_into_sentences() -> None:
    assert clean_impression("axial t2 - weighted mri shows a lesion . no mass") == (
        "Axial T2-weighted MRI shows a lesion. No mass."
    )
    assert clean_impression("ct , with contrast ( arterial phase ) ;") == (
        "CT, with contrast (arterial phase)."
    )
    # Stopped at the length limit: the sentence cut off is dropped, unless it is the only one.
    cut = "ct shows a mass . note the large"
    assert clean_impression(cut, finished=False) == "CT shows a mass."
    assert clean_impression("note the large", finished=False) == "Note the large."
    with pytest.raises(EmptyImpressionError, match="the image"):
        clean_impression(" . , ; ")


def test_config_values_are_checked() -> None:
    with pytest.raises(ModelConfigError, match=r"decoder\.kind"):
        tiny_config(kind="lstm")
    with pytest.raises(ModelConfigError, match="language_model"):
        tiny_config(kind="qformer")
    with pytest.raises(ModelConfigError, match="max_new_tokens"):
        tiny_config(max_length=8)


def test_retrieval_bank_finds_the_nearest_and_round_trips(tmp_path: Path) -> None:
    bank = RetrievalBank(
        embeddings=torch.eye(3),
        texts=("first", "second", "third"),
        keys=("a", "b", "c"),
        case_ids=("A", "A", "B"),
    )
    assert bank.retrieve(torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.2, 2.0]])) == ["second", "third"]
    bank.save(tmp_path)
    loaded = RetrievalBank.load(tmp_path)
    assert loaded.texts == bank.texts and torch.allclose(loaded.embeddings, bank.embeddings)
    with pytest.raises(RetrievalBankError, match="one of each"):
        RetrievalBank(torch.eye(2), ("only one",), ("a",), ("A",))
