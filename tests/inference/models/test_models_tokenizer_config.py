"""Tokenizer round trip and configuration validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.models import DualEncoderConfig, ModelConfigError, TextTokenizer
from inference.models.tokenizer import TokenizerError, resolve_pretrained, train_wordpiece

REPORTS = [
    "Axial CT of the chest shows a nodule in the right upper lobe.",
    "Sagittal T2 MRI of the lumbar spine shows disc herniation.",
    "Coronal CT of the abdomen: liver lesion, no ascites.",
    "Axial T2 FLAIR MRI shows periventricular hyperintensity.",
] * 5


def test_wordpiece_round_trip_keeps_domain_words_whole(tmp_path: Path) -> None:
    tok = train_wordpiece(REPORTS, vocab_size=200, max_length=32)
    for word in ("ct", "t2", "sagittal", "axial"):
        assert word in tok.tokens(f"{word} image")
    batch = tok(["Sagittal T2 MRI of the lumbar spine.", "CT"])
    assert batch.input_ids.shape == batch.attention_mask.shape
    assert batch.input_ids.shape[0] == 2
    assert int(batch.attention_mask[1].sum()) < int(batch.attention_mask[0].sum())
    assert tok.decode(batch.input_ids[0].tolist()) == "sagittal t2 mri of the lumbar spine."
    tok.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.from_file(tmp_path / "tokenizer.json", max_length=32)
    assert again(["Axial CT"]).input_ids.tolist() == tok(["Axial CT"]).input_ids.tolist()


def test_truncation_and_errors(tmp_path: Path) -> None:
    tok = train_wordpiece(REPORTS, vocab_size=200, max_length=8)
    assert tok([" ".join(["axial"] * 50)]).input_ids.shape[1] == 8
    with pytest.raises(ValueError, match="no texts"):
        tok([])
    (tmp_path / "broken.json").write_text("{}", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"broken\.json"):
        TextTokenizer.from_file(tmp_path / "broken.json", 8)
    with pytest.raises(TokenizerError, match="not installed"):
        resolve_pretrained("python-package:no_such_package_xyz/model")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image": {"spatial_dims": 4}}, "image.spatial_dims"),
        ({"image": {"image_size": [32]}}, "image.image_size"),
        ({"image": {"architecture": "vgg"}}, "image.architecture"),
        ({"text": {"hidden_size": 30, "num_heads": 4}}, "text.hidden_size"),
        ({"text": {"source": "pretrained"}}, "text.pretrained"),
        ({"embed_dim": "big"}, "embed_dim"),
        ({"colour": 1}, "unknown"),
        ({"init_temperature": 5.0}, "init_temperature"),
    ],
)
def test_bad_config_values_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        DualEncoderConfig.from_dict(data)


def test_presets_parse() -> None:
    presets = Path(__file__).resolve().parents[3] / "conf" / "findings" / "presets"
    for preset in sorted(presets.glob("*.toml")):
        config = DualEncoderConfig.from_file(preset)
        assert config.image.spatial_dims in (2, 3)
    ct = DualEncoderConfig.from_file(presets / "base-ct.toml")
    assert ct.image.image_size == (160, 224, 224)
