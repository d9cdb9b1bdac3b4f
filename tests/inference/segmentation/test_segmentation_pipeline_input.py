"""The segmentation pipeline refuses what a CT organ model cannot read, naming why."""

from __future__ import annotations

import numpy as np
import pytest

from inference.segmentation.config import SegmentationConfigError, SegmentationModelConfig
from inference.segmentation.preprocess import check_readable
from inference.volume import Image2D, SeriesIdentity, Volume3D, VolumeError

CONFIG = SegmentationModelConfig(labels=(5,))


def volume(modality: str = "CT", shape: tuple[int, ...] = (4, 8, 8)) -> Volume3D:
    return Volume3D(
        array=np.zeros(shape, dtype=np.float32),
        affine=np.eye(4),
        source_sop_instance_uids=tuple("1" for _ in range(shape[0])),
        series=SeriesIdentity("1", "1.2", modality),
    )


def test_mr_is_refused_by_a_ct_package() -> None:
    with pytest.raises(VolumeError, match="modality MR"):
        check_readable(volume("MR"), CONFIG)


def test_colour_is_refused() -> None:
    with pytest.raises(VolumeError, match="colour"):
        check_readable(volume(shape=(4, 8, 8, 3)), CONFIG)


def test_a_single_slice_is_refused() -> None:
    with pytest.raises(VolumeError, match="1 slice"):
        check_readable(volume(shape=(1, 8, 8)), CONFIG)


def test_projection_images_are_refused_by_the_pipeline() -> None:
    from inference.pipelines.segmentation import SegmentationPipeline

    image = Image2D(
        pixels=np.zeros((8, 8), dtype=np.float32),
        pixel_spacing=(0.2, 0.2),
        spacing_source="PixelSpacing",
        source_sop_instance_uid="1.2.3",
        frame_number=1,
        series=SeriesIdentity("1", "1.2", "DX"),
    )
    pipeline = SegmentationPipeline.__new__(SegmentationPipeline)
    with pytest.raises(VolumeError, match="projection images"):
        pipeline.read((image,))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"network": "vnet"}, "model.network"),
        ({"roi_size": [80, 80, 20]}, "multiple of 8"),
        ({"spacing": [3.0, 0.0, 3.0]}, "model.spacing"),
        ({"hu_range": [500.0, -500.0]}, "model.hu_range"),
        ({"labels": [5, 5]}, "twice"),
        ({"init_filters": 16, "network": "swinunetr", "roi_size": [96, 96, 96]}, "multiple of 12"),
        ({"init_filters": 12}, "multiple of 8"),
        ({"colour": True}, "unknown model key"),
        ({"overlap": "half"}, "model.overlap"),
    ],
)
def test_bad_model_configuration_is_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(SegmentationConfigError, match=message):
        SegmentationModelConfig.from_dict(data)
