"""Fixtures for the training tests: a small synthetic archive in the MedPix layout, a tiny
model configuration, and the path of the shared real data (tests needing it skip without it)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY_MODEL = """
embed_dim = 16
[image]
architecture = "resnet"
spatial_dims = 2
image_size = [32, 32]
layers = [1, 1, 1, 1]
widths = [8, 8, 16, 16]
feature_dim = 16
[text]
source = "scratch"
vocab_size = 300
hidden_size = 16
num_layers = 1
num_heads = 2
intermediate_size = 32
max_length = 32
"""

CAPTIONS = {
    "CT": ["Axial CT of the chest shows a nodule", "CT abdomen with contrast, liver lesion"],
    "MR": ["Sagittal T2 MRI of the spine", "Axial FLAIR MRI brain hyperintensity"],
}


def shared_data(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"shared data {folder} is absent (CI checks it out beside the repository)")
    return folder


def _image(path: Path, bright: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(40, 36)).astype(np.uint8)
    if bright:
        pixels[5:20, 5:20] = 230
    else:
        pixels[20:35, 15:30] = 230
    Image.fromarray(pixels, mode="L").save(path)


def make_archive(root: Path, cases_per_split: int = 6, bad: bool = False) -> Path:
    """A MedPix-layout folder; with ``bad``, one of each kind of bad input is added."""
    images = root / "images"
    images.mkdir(parents=True)
    img_rows, case_rows = [], []
    n = 0
    for split in ("train", "dev"):
        for c in range(cases_per_split):
            case = f"C{split}{c}"
            kind = "CT" if c % 2 == 0 else "MR"
            case_rows.append(
                {
                    "case_id": case,
                    "split": split,
                    "title": f"{kind} case {c}",
                    "history": "XXXX-year-old with pain.",
                    "findings": f"{kind} findings for case {c}.",
                    "differential": "",
                    "diagnosis": "",
                }
            )
            for j in range(2):
                n += 1
                rel = f"images/{case}_{j}.png"
                _image(root / rel, bright=kind == "CT", seed=n)
                img_rows.append(
                    {
                        "image": rel,
                        "case_id": case,
                        "split": split,
                        "type": kind,
                        "modality": kind,
                        "plane": "Axial",
                        "location": "x",
                        "location_category": "Head",
                        "age": "50",
                        "sex": "male",
                        "caption": CAPTIONS[kind][j],
                    }
                )
    if bad:
        base = dict(img_rows[0])
        img_rows.append({**base, "image": "images/missing.png"})  # image file absent
        (root / "images/corrupt.png").write_bytes(b"not a png at all")
        img_rows.append({**base, "image": "images/corrupt.png"})  # unreadable image
        _image(root / "images/nocase.png", True, 99)
        img_rows.append({**base, "image": "images/nocase.png", "case_id": "GONE"})  # no report
        _image(root / "images/empty.png", True, 98)
        case_rows.append(
            {
                **case_rows[0],
                "case_id": "EMPTY",
                "title": "",
                "history": "None.",
                "findings": "XXXX",
            }
        )
        img_rows.append({**base, "image": "images/empty.png", "case_id": "EMPTY", "caption": " "})
    for name, rows in (("images.csv", img_rows), ("cases.csv", case_rows)):
        with (root / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


CATALOGUE = """
name = "synthetic"
[[finding]]
name = "ct"
group = "modality"
positive = ["CT", "CT scan"]
label = { column = "type", value = "CT" }
[[finding]]
name = "mr"
group = "modality"
positive = ["MRI", "MR image"]
label = { column = "type", value = "MR" }
[[finding]]
name = "nodule"
positive = ["nodule"]
negative = ["no nodule"]
[targets]
"groups.modality.accuracy" = 0.1
"""


def write_train_config(root: Path, archive: Path, **optim: object) -> Path:
    (root / "tiny.toml").write_text(TINY_MODEL, encoding="utf-8")
    (root / "catalogue.toml").write_text(CATALOGUE, encoding="utf-8")
    settings: dict[str, object] = {
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_steps": 2,
        "num_threads": 1,
    }
    settings.update(optim)
    lines = [
        'name = "synthetic-tiny"',
        'preset = "tiny.toml"',
        'catalogue = "catalogue.toml"',
        "[data]",
        f'archive = "{archive}"',
        'text_views = [["caption"], ["caption", "findings"]]',
        "[optim]",
    ]
    for key, value in settings.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    path = root / "train.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "archive")


@pytest.fixture
def bad_archive(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "archive", bad=True)
