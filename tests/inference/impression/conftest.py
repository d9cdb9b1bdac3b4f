"""A tiny impression model built from configuration, with a WordPiece tokenizer of a few
captions (no file from outside the test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference.impression.config import ImpressionConfig
from inference.impression.tokenizer import DecoderTokenizer
from inference.models.tokenizer import train_wordpiece

CAPTIONS = [
    "Axial CT of the chest shows a nodule.",
    "Sagittal T2 MRI of the spine.",
    "Coronal CT of the abdomen with contrast shows a liver lesion.",
    "Axial FLAIR MRI of the brain shows a hyperintensity.",
] * 3

TINY: dict[str, Any] = {
    "image": {
        "image_size": [32, 32],
        "layers": [1, 1, 1, 1],
        "widths": [8, 8, 16, 16],
        "feature_dim": 16,
    },
    "decoder": {
        "num_layers": 1,
        "hidden_size": 16,
        "num_heads": 2,
        "vocab_size": 120,
        "max_length": 16,
        "qformer_heads": 2,
    },
    "generation": {"beam_size": 2, "max_new_tokens": 8, "min_new_tokens": 2},
}


def tiny_config(**decoder: Any) -> ImpressionConfig:
    data = {**TINY, "decoder": {**TINY["decoder"], **decoder}}
    return ImpressionConfig.from_dict(data)


@pytest.fixture
def tokenizer(tmp_path: Path) -> DecoderTokenizer:
    path = tmp_path / "tokenizer.json"
    train_wordpiece(CAPTIONS, 120, 16).save(path)
    return DecoderTokenizer.from_file(path, "[CLS]", "[SEP]", "[PAD]", 16)
