"""Zero-shot findings of one series with a findings package (ELIXR, CheXzero).

A 2D package reads projection images as they are. A 2D package reading a CT or MR volume
(the MedPix-style packages were trained on single key images of CT and MR studies) reads
``slices`` planes spread evenly over the central part of the stack (the first and last fifth,
often partial anatomy, are left out), each as a key image would be shown:

* CT: the window the modality stored for display (WindowCenter/WindowWidth of the series),
  else a soft-tissue window (40/400 HU), because teaching-file key images are windowed
  displays, not raw Hounsfield units;
* MR: the slice's own robust intensity range, as for the training images.

Each plane is scored and the probabilities are averaged over the planes (so a group's
probabilities still sum to one); the series' search embedding is the normalised mean of the
planes' embeddings. A 3D package reads the whole volume at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from inference.models.config import ImageEncoderConfig
from inference.models.preprocess import image_to_tensor, volume_to_tensor
from inference.packages import FindingsModel, load_findings_package
from inference.results import AlgorithmIdentity, FindingResult, Findings
from inference.volume.types import Image2D, Volume3D, VolumeError
from inference.zero_shot import ZeroShotClassifier, build_classifier, score

SOFT_TISSUE_WINDOW = (40.0, 400.0)  # centre, width in HU
CENTRAL_FRACTION = 0.6


@dataclass(frozen=True)
class SeriesReading:
    """The findings of one series and its image embedding (for text search)."""

    findings: Findings
    embedding: npt.NDArray[np.float32]
    package_path: Path  # the package that read it: search embeds queries with the same one


class FindingsPipeline:
    """One loaded findings package with its zero-shot classifier, built once and kept."""

    def __init__(self, model: FindingsModel, slices: int = 9) -> None:
        if slices < 1:
            raise ValueError("slices must be at least 1")
        self.model = model
        self.slices = slices
        self.device = next(model.model.parameters()).device
        self.classifier: ZeroShotClassifier = build_classifier(
            model.catalogue, model.embed_texts, float(model.model.scale().detach())
        )
        manifest = model.manifest
        self.algorithm = AlgorithmIdentity(
            manifest.name, manifest.version, manifest.content_hash, "findings"
        )

    def read(
        self, item: Volume3D | Sequence[Image2D], window: tuple[float, float] | None = None
    ) -> SeriesReading:
        """Score a rebuilt series; ``window`` (centre, width) is the CT display window."""
        config = self.model.config.image
        if isinstance(item, Volume3D):
            if item.array.ndim != 3:
                raise VolumeError(
                    f"series {item.series.series_instance_uid}: a colour volume cannot be read "
                    "by a findings model"
                )
            if config.spatial_dims == 3:
                tensors = volume_to_tensor(item, config)[None]
                uids: tuple[str, ...] = item.source_sop_instance_uids
                method = "whole volume (3D encoder)"
            else:
                tensors, uids, method = key_image_tensors(item, window, config, self.slices)
            series_uid = item.series.series_instance_uid
        else:
            if config.spatial_dims != 2:
                raise VolumeError(
                    "a 3D findings package cannot read projection images; route them to a 2D one"
                )
            images = list(item)
            if not images:
                raise VolumeError("the series has no image to read")
            tensors = torch.stack([image_to_tensor(image, config) for image in images])
            uids = tuple(dict.fromkeys(image.source_sop_instance_uid for image in images))
            method = f"{len(images)} projection image(s), probabilities averaged"
            series_uid = images[0].series.series_instance_uid
        with self._precision():
            embeddings = F.normalize(self.model.embed_images(tensors).float(), dim=-1)
        probabilities = score(self.classifier, embeddings).probabilities.mean(0)
        mean = F.normalize(embeddings.mean(0), dim=-1)
        findings = Findings(
            algorithm=self.algorithm,
            series_instance_uid=series_uid,
            results=self._results(probabilities),
            read_sop_instance_uids=uids,
            method=method,
        )
        return SeriesReading(findings, mean.numpy().astype(np.float32), self.model.path)

    def _results(self, probabilities: torch.Tensor) -> tuple[FindingResult, ...]:
        catalogue = self.model.catalogue
        names = score_names(self.classifier)
        by_name = dict(zip(names, probabilities.tolist(), strict=True))
        winners = {
            group: max(members, key=lambda f: by_name[f.name]).name
            for group, members in catalogue.groups().items()
        }
        results = []
        for finding in catalogue.findings:
            p = float(by_name[finding.name])
            if finding.group:
                results.append(
                    FindingResult(
                        finding.name,
                        finding.display,
                        p,
                        group=finding.group,
                        snomed=finding.snomed,
                        chosen=winners[finding.group] == finding.name,
                    )
                )
            else:
                threshold = finding.threshold
                results.append(
                    FindingResult(
                        finding.name,
                        finding.display,
                        p,
                        snomed=finding.snomed,
                        present=p >= threshold,
                        threshold=threshold,
                    )
                )
        return tuple(results)

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        """Half precision on a GPU (autocast), full precision on the CPU."""
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield


def load_pipeline(path: Path, device: torch.device) -> FindingsPipeline:
    """The findings pipeline of a package folder (hash-checked), for the study reader."""
    return FindingsPipeline(load_findings_package(path, device=device))


def key_image_tensors(
    volume: Volume3D,
    window: tuple[float, float] | None,
    image_config: ImageEncoderConfig,
    slices: int = 9,
) -> tuple[torch.Tensor, tuple[str, ...], str]:
    """A CT or MR volume read as key images: ``slices`` central planes, CT in its window.

    Returns the planes' model inputs (planes blank in the window are left out), the SOP
    Instance UIDs of the planes read, and how they were read, in words. Any 2D package
    conditioned on images (findings, impression) reads a volume through here, as it was
    trained on teaching-file key images.
    """
    count = volume.array.shape[0]
    picked = central_planes(count, slices)
    modality = volume.series.modality.upper()
    ct_window = (window or SOFT_TISSUE_WINDOW) if modality == "CT" else None
    tensors = []
    read = []
    for index in picked:
        plane = np.asarray(volume.array[index], dtype=np.float32)
        if ct_window is not None:
            plane = apply_window(plane, ct_window)
        if float(plane.max()) <= float(plane.min()):
            continue  # all air or all bone in this window: nothing a key image would show
        read.append(index)
        image = Image2D(
            pixels=plane,
            pixel_spacing=None,
            spacing_source="none",
            source_sop_instance_uid=volume.source_sop_instance_uids[index],
            frame_number=1,
            series=volume.series,
        )
        tensors.append(image_to_tensor(image, image_config))
    if not read:
        raise VolumeError(
            f"series {volume.series.series_instance_uid}: every plane read is blank"
            + (f" in the CT window {ct_window[0]:g}/{ct_window[1]:g}" if ct_window else "")
        )
    uids = tuple(volume.source_sop_instance_uids[i] for i in read)
    how = f"mean of {len(read)} of {count} planes from the central {CENTRAL_FRACTION:.0%}"
    if ct_window is not None:
        how += f", CT window {ct_window[0]:g}/{ct_window[1]:g} HU"
    return torch.stack(tensors), uids, how


def score_names(classifier: ZeroShotClassifier) -> tuple[str, ...]:
    """The finding names in the column order of :func:`inference.zero_shot.score`."""
    groups = classifier.catalogue.groups()
    names = [f.name for group in classifier.group_names for f in groups[group]]
    return (*names, *(f.name for f in classifier.catalogue.binary()))


def central_planes(count: int, wanted: int) -> list[int]:
    """``wanted`` plane indices spread evenly over the central part of ``count`` planes."""
    if count <= 0:
        return []
    margin = (1.0 - CENTRAL_FRACTION) / 2.0
    lo, hi = margin * (count - 1), (1.0 - margin) * (count - 1)
    picks = np.linspace(lo, hi, num=min(wanted, count)) if wanted > 1 else [(count - 1) / 2]
    return sorted({round(float(p)) for p in picks})


def apply_window(values: npt.NDArray[np.float32], window: tuple[float, float]) -> np.ndarray:
    """Linear VOI window (PS3.3 C.11.2.1.2) to [0, 1]."""
    centre, width = window
    if width <= 0:
        raise ValueError(f"window width must be positive, not {width}")
    lo = centre - width / 2.0
    out: np.ndarray = np.clip((values - lo) / width, 0.0, 1.0).astype(np.float32)
    return out
