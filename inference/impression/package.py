"""Impression packages: the generator (or a retrieval-only model), its tokenizer and its
retrieval bank, checked against the package's content hash.

Layout::

    package.json            manifest (task "impression"), file hashes, content_hash
    config.json             ImpressionConfig
    weights.safetensors     image encoder, conditioning, decoder (float16; a frozen language
                            model of the qformer route is referenced by its hash instead)
    tokenizer.json          the decoder's tokenizer (not in a retrieval-only package)
    retrieval.safetensors   the retrieval bank's training-image embeddings
    retrieval.json          their keys, cases and target texts
    metrics.json, MODEL_CARD.md   evaluation (documentation: not hashed)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from inference.impression.config import ImpressionConfig
from inference.impression.generate import generate_texts
from inference.impression.model import ImpressionModel, language_model_hash, load_language_model
from inference.impression.retrieval import BANK_TEXTS, BANK_WEIGHTS, RetrievalBank
from inference.impression.tokenizer import DecoderTokenizer
from inference.models.config import ModelConfigError
from inference.models.tokenizer import TokenizerError
from inference.packages import Manifest, PackageError, require_task, verify_package

TASK = "impression"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
TOKENIZER = "tokenizer.json"


def required_files(config: ImpressionConfig) -> tuple[str, ...]:
    """The model files a package of this configuration must list."""
    files = (CONFIG, WEIGHTS, BANK_WEIGHTS, BANK_TEXTS)
    return (*files, TOKENIZER) if config.decoder.kind != "none" else files


@dataclass(frozen=True)
class ImpressionPackage:
    """A loaded impression package: model (eval mode), tokenizer, retrieval bank, manifest."""

    model: ImpressionModel
    tokenizer: DecoderTokenizer | None  # None: retrieval only
    bank: RetrievalBank
    manifest: Manifest
    path: Path

    @property
    def config(self) -> ImpressionConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def features(
        self, images: torch.Tensor, batch_size: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder grid and pooled features of ``[N, C, H, W]`` network inputs."""
        grids, pooled = [], []
        for i in range(0, images.shape[0], batch_size):
            g, p = self.model.image_features(images[i : i + batch_size].float().to(self.device))
            grids.append(g)
            pooled.append(p)
        return torch.cat(grids), torch.cat(pooled)

    def retrieve(self, pooled: torch.Tensor) -> list[str]:
        """The nearest training report of each image (the baseline and the fallback)."""
        return self.bank.retrieve(self.model.retrieval_embedding(pooled).cpu())

    @torch.no_grad()
    def describe(
        self,
        grid: torch.Tensor,
        pooled: torch.Tensor,
        sources: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> list[str]:
        """The generated impression of each image; the retrieved report without a generator."""
        if self.tokenizer is None or not self.model.generates:
            return self.retrieve(pooled)
        names = list(sources) if sources else [f"image {i}" for i in range(grid.shape[0])]
        out: list[str] = []
        for i in range(0, grid.shape[0], batch_size):
            out += generate_texts(
                self.model,
                self.tokenizer,
                grid[i : i + batch_size].to(self.device),
                pooled[i : i + batch_size].to(self.device),
                names[i : i + batch_size],
            )
        return out


def load_impression_package(
    path: str | Path, device: str | torch.device = "cpu"
) -> ImpressionPackage:
    """Load and hash-check an impression package; :class:`PackageError` says what is wrong."""
    from safetensors.torch import load_file

    folder = Path(path)
    try:
        config = ImpressionConfig.from_file(folder / CONFIG)
    except ModelConfigError as exc:
        raise PackageError(f"package {folder}: {exc}") from exc
    manifest = verify_package(folder, required=required_files(config))
    require_task(manifest, folder, TASK)
    d = config.decoder
    tokenizer = None
    language_model = None
    try:
        if d.kind != "none":
            tokenizer = DecoderTokenizer.from_file(
                folder / TOKENIZER, d.bos_token, d.eos_token, d.pad_token, d.max_length
            )
        if d.kind == "qformer":
            reference = _reference(manifest)
            actual = language_model_hash(d.language_model)
            if reference.get("sha256") != actual:
                raise PackageError(
                    f"package {folder}: the language model in {d.language_model!r} differs "
                    "from the one it was trained with (weights hash)"
                )
            language_model = load_language_model(d.language_model)
        model = ImpressionModel(
            config,
            vocab_size=tokenizer.vocab_size if tokenizer and d.kind == "gpt2" else None,
            language_model=language_model,
        )
    except (ModelConfigError, TokenizerError) as exc:
        raise PackageError(f"package {folder}: {exc}") from exc
    state = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("language_model.")]
    if missing or unexpected:
        raise PackageError(
            f"package {folder}: weights do not fit the configuration "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    bank = RetrievalBank.load(folder)
    model.to(device).eval()
    return ImpressionPackage(model, tokenizer, bank, manifest, folder)


def _reference(manifest: Manifest) -> dict[str, str]:
    reference = manifest.text_encoder_reference
    if not reference:
        raise PackageError(
            f"package {manifest.name} {manifest.version}: a qformer package must reference "
            "its language model (name and weights hash) in its manifest"
        )
    return dict(reference)
