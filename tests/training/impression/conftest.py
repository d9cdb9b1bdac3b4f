"""A tiny impression configuration over the synthetic MedPix-layout archive."""

from __future__ import annotations

from pathlib import Path

TINY_IMPRESSION = """
name = "impression-test"
task = "impression"

[model]
features = "spatial"

[model.image]
architecture = "resnet"
spatial_dims = 2
image_size = [32, 32]
layers = [1, 1, 1, 1]
widths = [8, 8, 16, 16]
feature_dim = 16

[model.decoder]
kind = "gpt2"
num_layers = 1
hidden_size = 16
num_heads = 2
dropout = 0.1
vocab_size = 200
max_length = 16

[model.generation]
beam_size = 2
max_new_tokens = 8
min_new_tokens = 1

[data]
archive = "{archive}"
target_sections = ["caption"]

[optim]
epochs = {epochs}
batch_size = 4
lr = 1e-3
warmup_steps = 2
seed = 0
num_threads = 1
{optim_extra}

[evaluate]
catalogues = ["{catalogue}"]
examples = 3
"""


def write_config(
    folder: Path, archive: Path, epochs: int = 2, optim_extra: str = "", catalogue: str = ""
) -> Path:
    repo = Path(__file__).resolve().parents[3]
    path = folder / "impression.toml"
    path.write_text(
        TINY_IMPRESSION.format(
            archive=archive,
            epochs=epochs,
            optim_extra=optim_extra,
            catalogue=catalogue or repo / "conf" / "findings" / "medpix.toml",
        ),
        encoding="utf-8",
    )
    return path
