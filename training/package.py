"""Writing a trained model as a package (see :mod:`inference.packages` for the layout)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from inference.models.ensemble import FindingsNetwork
from inference.models.text_encoder import file_sha256, pretrained_weights_hash
from inference.models.tokenizer import TextTokenizer
from inference.packages import (
    CATALOGUE,
    CONFIG,
    ENTITIES,
    MANIFEST,
    MODEL_FILES,
    TOKENIZER,
    WEIGHTS,
    Manifest,
    content_hash,
)


def next_version(root: Path, name: str) -> str:
    """The next free integer version of ``name`` under ``root`` (versions are never reused)."""
    folder = root / name
    used = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return str(max(used, default=0) + 1)


def reserve_version(root: Path, name: str) -> Path:
    """Create the empty folder of the next free version, atomically: two trainings that end
    at the same moment get different versions."""
    while True:
        destination = root / name / next_version(root, name)
        try:
            destination.mkdir(parents=True)
        except FileExistsError:
            continue
        return destination


def write_package(
    destination: Path,
    name: str,
    version: str,
    task: str,
    model: FindingsNetwork,
    tokenizer: TextTokenizer,
    catalogue: Path,
    extra: dict[str, Any] | None = None,
    entity_lexicon: Path | None = None,
) -> Manifest:
    """Write a package into ``destination``, which must not exist yet (never overwritten).

    ``entity_lexicon``: the package embeds every text together with its entity view found
    with this lexicon (see :class:`inference.packages.FindingsModel`).

    The files are written into a temporary sibling folder and renamed into place at the end,
    so a crash leaves no half-written package behind.
    """
    from safetensors.torch import save

    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"package {destination} exists already; versions are never reused")
    tmp = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    config = model.config
    reference: dict[str, str] | None = None
    # Stored as float16: half the size (a seed ensemble stays a few MB), and the loader's
    # load_state_dict restores float32; the package's figures are measured on these weights.
    state = {
        k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    text = config.text
    if text.source == "pretrained" and text.trainable_layers >= 0 and not text.store_weights:
        # The frozen part of a pretrained encoder is referenced by its hash; the layers that
        # trained (the top ``trainable_layers``) are stored.
        reference = {
            "pretrained": config.text.pretrained,
            "sha256": pretrained_weights_hash(config.text),
        }
        n_layers = len(model.text_encoder.bert.encoder.layer)
        trained = tuple(
            f"text_encoder.bert.encoder.layer.{i}."
            for i in range(n_layers - text.trainable_layers, n_layers)
        )
        state = {
            k: v
            for k, v in state.items()
            if not _member_key(k).startswith("text_encoder.bert.")
            or _member_key(k).startswith(trained)
        }
    # Written like the other files, so the umask sets its mode (save_file makes it 0600, and a
    # node running as another user than the trainer could not read it).
    (tmp / WEIGHTS).write_bytes(save(state))
    (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    tokenizer.save(tmp / TOKENIZER)
    shutil.copyfile(catalogue, tmp / CATALOGUE)
    model_files: tuple[str, ...] = MODEL_FILES
    if entity_lexicon is not None:
        shutil.copyfile(entity_lexicon, tmp / ENTITIES)
        model_files = (*MODEL_FILES, ENTITIES)
    files = {f: file_sha256(tmp / f) for f in model_files}
    manifest = Manifest(
        name=name,
        version=version,
        task=task,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        content_hash=content_hash(files, reference),
        files=files,
        text_encoder_reference=reference,
        extra=extra or {},
    )
    (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(destination)  # onto the empty reserved folder, if any
    return manifest


def _member_key(key: str) -> str:
    """A weight's name without an ensemble member's prefix (``members.<i>.``)."""
    return re.sub(r"^members\.\d+\.", "", key)
