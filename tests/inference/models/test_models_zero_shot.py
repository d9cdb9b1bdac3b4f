"""Zero-shot scoring: prompt ensembles, group softmax, binary pos/neg, and search."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.zero_shot import CatalogueError, build_classifier, load_catalogue, score, search

CATALOGUE = """
[[finding]]
name = "ct"
group = "modality"
positive = ["ct", "ct scan"]
[[finding]]
name = "mr"
group = "modality"
positive = ["mri"]
[[finding]]
name = "effusion"
positive = ["effusion"]
negative = ["no effusion"]
snomed = "60046008"
"""

VECTORS = {
    "ct": [1.0, 0.0, 0.0],
    "ct scan": [0.9, 0.1, 0.0],
    "mri": [0.0, 1.0, 0.0],
    "effusion": [0.0, 0.0, 1.0],
    "no effusion": [0.0, 0.3, -1.0],
}


def embed(texts: Sequence[str]) -> torch.Tensor:
    return F.normalize(torch.tensor([VECTORS[t] for t in texts]), dim=-1)


def test_group_softmax_and_binary_scores(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CATALOGUE, encoding="utf-8")
    catalogue = load_catalogue(tmp_path / "c.toml")
    assert catalogue.find("effusion").snomed == "60046008"
    classifier = build_classifier(catalogue, embed, scale=20.0)
    images = F.normalize(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]]), dim=-1)
    scores = score(classifier, images)
    assert scores.names == ("ct", "mr", "effusion")
    groups = scores.probabilities[:, :2].sum(1)
    assert torch.allclose(groups, torch.ones(2))
    assert scores.column("ct")[0] > 0.9 and scores.column("mr")[1] > 0.9
    assert scores.column("effusion")[0] > 0.5 > scores.column("effusion")[1]


def test_search_ranks_by_similarity() -> None:
    images = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.7, 0.7]]), dim=-1)
    query = F.normalize(torch.tensor([[1.0, 0.1]]), dim=-1)
    indices, values = search(query, images, top_k=2)
    assert indices.tolist() == [[1, 2]]
    assert values[0, 0] >= values[0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[finding]]\nname = "a"\npositive = ["x"]\n', "needs negative"),
        ('[[finding]]\nname = "a"\npositive = []\nnegative=["y"]\n', "positive"),
        ('[[finding]]\nname = "a"\ngroup = "g"\npositive = ["x"]\n', "at least two"),
        ("name = 'x'\n", "no \\[\\[finding\\]\\]"),
    ],
)
def test_bad_catalogues_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(tmp_path / "c.toml")


def test_shipped_catalogue_loads() -> None:
    conf = Path(__file__).resolve().parents[3] / "conf" / "findings" / "medpix.toml"
    catalogue = load_catalogue(conf)
    assert set(catalogue.groups()) == {"modality", "plane", "location"}
    assert all(f.snomed for f in catalogue.findings)
