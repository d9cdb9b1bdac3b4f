"""Packages as the node reads them: the impression pipeline on volumes and projections, the
retrieval-only fallback, and the qformer route trained and packaged with a tiny local GPT-2."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.impression.package import load_impression_package
from inference.models.preprocess import image_to_tensor
from inference.pipelines.findings import key_image_tensors
from inference.pipelines.impression import load_pipeline
from inference.volume.types import Image2D, SeriesIdentity, Volume3D, VolumeError
from tests.inference.impression.test_qformer import save_tiny_gpt2
from training.config import load_train_config
from training.impression.config import ImpressionTrainConfig
from training.impression.workflow import train_and_package

from .conftest import write_config

SERIES = SeriesIdentity("1.2", "1.2.9", "CT")


def _package(tmp_path: Path, archive: Path, **decoder: Any) -> Path:
    config = load_train_config(write_config(tmp_path, archive, epochs=1))
    assert isinstance(config, ImpressionTrainConfig)
    model = config.model
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(model, decoder=dataclasses.replace(model.decoder, **decoder)),
    )
    outcome = train_and_package(config, tmp_path / "models", tmp_path / "run", False, False)
    assert outcome.package is not None
    return outcome.package


def test_pipeline_reads_the_central_plane_of_a_volume_and_the_first_projection(
    tmp_path: Path, archive: Path
) -> None:
    package = _package(tmp_path, archive)
    pipeline = load_pipeline(package, torch.device("cpu"))
    loaded = load_impression_package(package)
    assert pipeline.algorithm.task == "impression"
    assert pipeline.algorithm.content_hash == loaded.manifest.content_hash
    rng = np.random.default_rng(0)
    values = rng.normal(40, 200, size=(12, 40, 40)).astype(np.float32)
    uids = tuple(f"1.2.3.{i}" for i in range(12))
    volume = Volume3D(values, np.diag([2.0, 0.8, 0.8, 1.0]), uids, SERIES)
    impression = pipeline.read(volume, (40.0, 400.0))
    tensors, _, _ = key_image_tensors(volume, (40.0, 400.0), loaded.config.image, 9)
    grid, pooled = loaded.features(tensors[tensors.shape[0] // 2 :][:1])
    assert impression.text == loaded.describe(grid, pooled)[0]
    assert impression.algorithm == pipeline.algorithm
    images = [
        Image2D(rng.uniform(0, 255, (30, 40)), None, "none", f"1.2.4.{i}", 1, SERIES)
        for i in range(2)
    ]
    text = pipeline.read(images, None).text
    grid, pooled = loaded.features(image_to_tensor(images[0], loaded.config.image)[None])
    assert text == loaded.describe(grid, pooled)[0]
    with pytest.raises(VolumeError, match="no image"):
        pipeline.read([], None)


def test_a_retrieval_only_package_answers_with_a_training_caption(
    tmp_path: Path, archive: Path
) -> None:
    package = _package(tmp_path, archive, kind="none")
    loaded = load_impression_package(package)
    assert loaded.tokenizer is None and not (package / "tokenizer.json").exists()
    images = [Image2D(np.eye(32) * 200, None, "none", "1.2.5", 1, SERIES)]
    text = load_pipeline(package, torch.device("cpu")).read(images, None).text
    assert text in loaded.bank.texts


def test_qformer_route_trains_packages_and_loads(tmp_path: Path, archive: Path) -> None:
    from inference.impression.tokenizer import DecoderTokenizer
    from inference.models.tokenizer import train_wordpiece

    captions = (archive / "images.csv").read_text().splitlines()[1:]
    tok_path = tmp_path / "tok.json"
    train_wordpiece(captions, 150, 16).save(tok_path)
    tokenizer = DecoderTokenizer.from_file(tok_path, "[CLS]", "[SEP]", "[PAD]", 16)
    lm = save_tiny_gpt2(tmp_path / "lm", tokenizer)
    package = _package(tmp_path, archive, kind="qformer", language_model=str(lm), num_queries=4)
    loaded = load_impression_package(package)
    assert loaded.manifest.text_encoder_reference is not None
    images = torch.randn(2, 1, 32, 32)
    grid, pooled = loaded.features(images)
    again = load_impression_package(package)
    assert again.describe(*again.features(images)) == loaded.describe(grid, pooled)
    # A different language model in the folder is refused by its hash.
    from transformers import GPT2LMHeadModel

    other = GPT2LMHeadModel.from_pretrained(lm)
    with torch.no_grad():
        other.lm_head.weight.add_(1.0)
    other.save_pretrained(lm)
    from inference.packages import PackageError

    with pytest.raises(PackageError, match="differs from the one it was trained with"):
        load_impression_package(package)
