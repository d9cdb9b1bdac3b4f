"""Writing a trained model as a package (see :mod:`inference.packages` for the layout)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

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


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict as safetensors bytes, floating tensors as float16.

    Half the size (a seed ensemble stays a few MB); ``load_state_dict`` restores float32, and
    the package's figures are measured on these weights.
    """
    from safetensors.torch import save

    half = {
        k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state.items()
    }
    return save(half)


def write_package_folder(
    destination: Path,
    *,
    name: str,
    version: str,
    task: str,
    write_files: Callable[[Path], Iterable[str]],
    reference: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write a package of any task into ``destination``, which must not exist yet.

    ``write_files(folder)`` writes the model files into ``folder`` and returns their names;
    each is hashed into the manifest. The files are written into a temporary sibling folder
    and renamed into place at the end, so a crash leaves no half-written package behind.
    """
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"package {destination} exists already; versions are never reused")
    tmp = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    names = list(write_files(tmp))
    if not names:
        raise ValueError(f"package {name}: no model file was written")
    files = {f: file_sha256(tmp / f) for f in names}
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
    """Write a findings package into ``destination`` (see :func:`write_package_folder`).

    ``entity_lexicon``: the package embeds every text together with its entity view found
    with this lexicon (see :class:`inference.packages.FindingsModel`).
    """
    config = model.config
    reference: dict[str, str] | None = None
    state = dict(model.state_dict())
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

    def write_files(folder: Path) -> list[str]:
        # Written like the other files, so the umask sets its mode (save_file makes it 0600,
        # and a node running as another user than the trainer could not read it).
        (folder / WEIGHTS).write_bytes(weights_bytes(state))
        (folder / CONFIG).write_text(
            json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        tokenizer.save(folder / TOKENIZER)
        shutil.copyfile(catalogue, folder / CATALOGUE)
        if entity_lexicon is None:
            return list(MODEL_FILES)
        shutil.copyfile(entity_lexicon, folder / ENTITIES)
        return [*MODEL_FILES, ENTITIES]

    return write_package_folder(
        destination,
        name=name,
        version=version,
        task=task,
        write_files=write_files,
        reference=reference,
        extra=extra,
    )


def _member_key(key: str) -> str:
    """A weight's name without an ensemble member's prefix (``members.<i>.``)."""
    return re.sub(r"^members\.\d+\.", "", key)
