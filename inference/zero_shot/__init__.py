"""Zero-shot findings from prompt pairs, and text-to-image search (ELIXR, CheXzero)."""

from inference.zero_shot.catalogue import (
    CatalogueError,
    Finding,
    FindingCatalogue,
    load_catalogue,
)
from inference.zero_shot.scoring import (
    FindingScores,
    ZeroShotClassifier,
    build_classifier,
    class_embedding,
    score,
    search,
)

__all__ = [
    "CatalogueError",
    "Finding",
    "FindingCatalogue",
    "FindingScores",
    "ZeroShotClassifier",
    "build_classifier",
    "class_embedding",
    "load_catalogue",
    "score",
    "search",
]
