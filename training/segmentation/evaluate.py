"""Per-structure Dice and 95% Hausdorff distance of a package on labelled volumes, measured on
each volume's own (source) grid, in mm, with MONAI's metrics.

The volumes go through the node's own path (:func:`inference.segmentation.segment_volume`:
model grid, sliding window, argmax, nearest neighbour back), so a DICOM series is scored
exactly as the node would segment it. A structure is scored where the reference or the
prediction holds it; only structures the package was trained on are compared.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.metrics.hausdorff_distance import HausdorffDistanceMetric
from monai.metrics.meandice import DiceMetric

from inference.segmentation.package import SegmentationModel
from inference.segmentation.segment import segment_volume
from training.archive.label_volumes import LabelledVolume


def structure_metrics(
    predicted: npt.NDArray[np.bool_],
    reference: npt.NDArray[np.bool_],
    spacing: tuple[float, float, float],
) -> tuple[float, float]:
    """Dice and 95th-percentile Hausdorff distance (mm) of two masks on one grid.

    Both are cropped to the bounding box of their union (plus a margin) first: distances
    between surface voxels do not depend on the empty space around them. The distance is
    ``nan`` when either mask is empty.
    """
    either = predicted | reference
    if not either.any():
        return float("nan"), float("nan")
    box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(either))
    p = torch.from_numpy(np.ascontiguousarray(predicted[box]))[None, None].float()
    r = torch.from_numpy(np.ascontiguousarray(reference[box]))[None, None].float()
    # ignore_empty=False: a structure found where the reference has none scores 0, not NaN.
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    dice = float(_tensor(metric(p, r)).squeeze())
    if not (predicted.any() and reference.any()):
        return dice, float("nan")
    hausdorff = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    hd95 = float(_tensor(hausdorff(p, r, spacing=list(spacing))).squeeze())
    return dice, hd95


def evaluate_volumes(model: SegmentationModel, items: list[LabelledVolume]) -> dict[str, Any]:
    """Per-volume, per-structure figures and the summary over structures present in both."""
    by_label = {s.label: s for s in model.structures}
    volumes = []
    for item in items:
        predicted = segment_volume(model.network, model.config, item.volume)
        voxel_ml = float(np.prod(item.volume.spacing)) / 1000.0
        rows: list[dict[str, Any]] = []
        in_reference = {int(v) for v in np.unique(item.labels) if v}
        not_learnt = sorted(in_reference - set(by_label))
        for label in sorted(by_label):
            p = predicted == label
            r = item.labels == label
            if not (p.any() or r.any()):
                continue
            dice, hd95 = structure_metrics(p, r, item.volume.spacing)
            rows.append(
                {
                    "label": label,
                    "name": by_label[label].name,
                    # None, not NaN, where undefined: metrics.json stays strict JSON.
                    "dice": _finite(dice),
                    "hd95_mm": _finite(hd95),
                    "in_reference": bool(r.any()),
                    "in_prediction": bool(p.any()),
                    "reference_ml": round(float(r.sum()) * voxel_ml, 2),
                    "predicted_ml": round(float(p.sum()) * voxel_ml, 2),
                }
            )
        both = [r for r in rows if r["in_reference"] and r["in_prediction"]]
        volumes.append(
            {
                "image": item.image_file.name,
                "labels": item.labels_file.name,
                "shape": list(item.volume.array.shape[:3]),
                "spacing_mm": [round(s, 4) for s in item.volume.spacing],
                "structures": rows,
                "mean_dice_present_in_both": _mean([r["dice"] for r in both]),
                "mean_hd95_mm_present_in_both": _mean([r["hd95_mm"] for r in both]),
                "only_in_reference": [r["name"] for r in rows if not r["in_prediction"]],
                "only_in_prediction": [r["name"] for r in rows if not r["in_reference"]],
                "reference_labels_not_in_model": not_learnt,
            }
        )
    return {"volumes": volumes}


def _tensor(value: object) -> torch.Tensor:
    assert isinstance(value, torch.Tensor)  # a metric called on one batch gives one tensor
    return value


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None
