"""Model packages: a folder the node loads a model from, checked against its content hash.

Every task's package has a ``package.json`` manifest naming its task and listing its model
files with their SHA-256; :func:`verify_package` checks them whatever the task. Each task's
loader names the files it needs (the impression and segmentation loaders live beside their
models). Layout of a findings package::

    package.json        manifest: name, version, task, file hashes, content_hash
    config.json         DualEncoderConfig
    weights.safetensors model weights (a frozen pretrained text encoder is referenced by
                        its weights' SHA-256 in the manifest instead of being copied)
    tokenizer.json      the text tokenizer
    catalogue.toml      the finding catalogue
    entities.toml       optional: the entity lexicon of a model trained with entity views;
                        every text is then embedded together with its entity view
    metrics.json, MODEL_CARD.md, *.png   evaluation results (documentation: not hashed)

``content_hash`` is the SHA-256 over the sorted ``name:sha256`` lines of the model files and
the pretrained reference; any change to what determines the model's outputs changes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from inference.models.config import DualEncoderConfig
from inference.models.ensemble import FindingsNetwork, build_dual_encoder
from inference.models.entities import EntityLexicon, LexiconError, load_lexicon
from inference.models.text_encoder import file_sha256, pretrained_weights_hash
from inference.models.tokenizer import TextTokenizer
from inference.zero_shot.catalogue import FindingCatalogue, load_catalogue

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

MANIFEST = "package.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
TOKENIZER = "tokenizer.json"
CATALOGUE = "catalogue.toml"
ENTITIES = "entities.toml"
MODEL_FILES = (CONFIG, WEIGHTS, TOKENIZER, CATALOGUE)  # of a findings package
FORMAT_VERSION = 1


class PackageError(ValueError):
    """A model package is incomplete, altered (hash mismatch) or cannot be loaded."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    created_at: str
    content_hash: str
    files: dict[str, str]  # model file -> sha256
    text_encoder_reference: dict[str, str] | None  # {"pretrained": ..., "sha256": ...}
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "created_at": self.created_at,
            "content_hash": self.content_hash,
            "files": self.files,
            "text_encoder_reference": self.text_encoder_reference,
            "extra": self.extra,
        }


@dataclass(frozen=True)
class FindingsModel:
    """A loaded findings package: network (eval mode), tokenizer, catalogue, manifest.

    With an entity lexicon (a model trained with entity views), a text that names radiology
    entities is embedded as the normalised mean of its own embedding and its entity view's
    ("Axial CT of the neck shows..." and "axial, CT, neck"): the two views the model was
    trained to match, combined as a prompt ensemble combines phrasings. Prompts, captions
    and search queries all go through here.
    """

    model: FindingsNetwork
    tokenizer: TextTokenizer
    catalogue: FindingCatalogue
    manifest: Manifest
    path: Path
    entity_lexicon: EntityLexicon | None = None

    @property
    def config(self) -> DualEncoderConfig:
        return self.model.config

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        own = self.embed_texts_alone(texts, batch_size)
        if self.entity_lexicon is None:
            return own
        views = [self.entity_lexicon.view(t) for t in texts]
        rows = [i for i, (v, t) in enumerate(zip(views, texts, strict=True)) if v and v != t]
        if rows:
            entities = self.embed_texts_alone([views[i] for i in rows], batch_size)
            own[rows] = F.normalize(own[rows] + entities, dim=-1)
        return own

    @torch.no_grad()
    def embed_texts_alone(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """The texts' own embeddings, without their entity views."""
        out = []
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[i : i + batch_size]))
            out.append(
                self.model.encode_text(batch.input_ids.to(device), batch.attention_mask.to(device))
                .float()
                .cpu()
            )
        return torch.cat(out)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        out = []
        device = next(self.model.parameters()).device
        for i in range(0, images.shape[0], batch_size):
            out.append(self.model.encode_image(images[i : i + batch_size].float().to(device)).cpu())
        return torch.cat(out)


def content_hash(files: dict[str, str], reference: dict[str, str] | None) -> str:
    lines = [f"{name}:{digest}" for name, digest in sorted(files.items())]
    if reference:
        lines.append(f"pretrained:{reference['pretrained']}:{reference['sha256']}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_manifest(path: str | Path) -> Manifest:
    folder = Path(path)
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return Manifest(
            name=raw["name"],
            version=str(raw["version"]),
            task=raw["task"],
            created_at=raw["created_at"],
            content_hash=raw["content_hash"],
            files=dict(raw["files"]),
            text_encoder_reference=raw.get("text_encoder_reference"),
            extra=dict(raw.get("extra", {})),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{str(folder)!r} is not a model package: {MANIFEST}: {exc}") from exc


def verify_package(path: str | Path, required: Sequence[str] = ()) -> Manifest:
    """Check every model file the manifest lists against its hash, and that each of
    ``required`` is among them; :class:`PackageError` names a missing or altered file."""
    folder = Path(path)
    manifest = read_manifest(folder)
    for name in required:
        if name not in manifest.files:
            raise PackageError(
                f"package {folder}: its manifest does not list {name}, which a "
                f"{manifest.task} package needs"
            )
    for name, recorded in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise PackageError(f"package {folder}: {name} is missing")
        if file_sha256(file) != recorded:
            raise PackageError(
                f"package {folder}: {name} does not match its recorded hash (altered or corrupt)"
            )
    if content_hash(manifest.files, manifest.text_encoder_reference) != manifest.content_hash:
        raise PackageError(f"package {folder}: content_hash does not match its files")
    return manifest


def require_task(manifest: Manifest, folder: Path, task: str) -> None:
    """Refuse a package made for another task, naming both."""
    if manifest.task != task:
        raise PackageError(f"package {folder} is a {manifest.task} package, not a {task} package")


def load_findings_package(
    path: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> FindingsModel:
    """Load a findings package; the hash is checked first unless ``verify`` is False."""
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = verify_package(folder, MODEL_FILES) if verify else read_manifest(folder)
    require_task(manifest, folder, "findings")
    config = DualEncoderConfig.from_file(folder / CONFIG)
    tokenizer = TextTokenizer.from_file(folder / TOKENIZER, config.text.max_length)
    model = build_dual_encoder(config, vocab_size=tokenizer.vocab_size)
    state = load_file(str(folder / WEIGHTS))
    reference = manifest.text_encoder_reference
    if reference is not None:
        actual = pretrained_weights_hash(config.text)
        if actual != reference["sha256"]:
            raise PackageError(
                f"package {folder}: the installed pretrained text encoder "
                f"{reference['pretrained']!r} differs from the one it was trained with"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    # An ensemble's keys carry a member prefix ("members.0.text_encoder.bert...").
    allowed_missing = {k for k in missing if ".text_encoder.bert." in f".{k}" and reference}
    if set(missing) - allowed_missing or unexpected:
        raise PackageError(
            f"package {folder}: weights do not fit the configuration "
            f"(missing {sorted(set(missing) - allowed_missing)[:5]}, unexpected {unexpected[:5]})"
        )
    model.to(device).eval()
    catalogue = load_catalogue(folder / CATALOGUE)
    lexicon = None
    if ENTITIES in manifest.files:
        try:
            lexicon = load_lexicon(folder / ENTITIES)
        except LexiconError as exc:
            raise PackageError(f"package {folder}: {exc}") from exc
    return FindingsModel(model, tokenizer, catalogue, manifest, folder, lexicon)


def load_active_findings_model(
    session: Session, device: str | torch.device = "cpu"
) -> FindingsModel | None:
    """The active findings package of the registry, hash-checked; None when none is active."""
    from store.model_registry import active_version

    row = active_version(session, "findings")
    if row is None:
        return None
    model = load_findings_package(row.path, device=device)
    if model.manifest.content_hash != row.content_hash:
        raise PackageError(
            f"package {row.path} ({row.name} {row.version}) no longer matches the hash it was "
            "registered with"
        )
    return model
