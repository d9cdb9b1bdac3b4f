"""The segmentation training configuration: the committed one loads; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import REPO
from training.config import TrainConfigError, load_train_config


def test_committed_configuration_loads() -> None:
    config = load_train_config(REPO / "conf" / "segmentation" / "ct-tiny.toml")
    assert config.task == "segmentation"
    assert config.model.network == "segresnet"
    assert len(config.model.labels) == len(config.data.structures) == 40
    assert 13 not in config.model.labels  # lung_middle_lobe_right: one voxel at 3 mm
    assert config.data.archive.name == "ct-totalsegmentator"
    assert set(config.data.splits) == {"train", "dicom"}
    assert config.dice_targets == {"liver": 0.7}


def test_base_preset_is_a_valid_model() -> None:
    from inference.segmentation.config import SegmentationModelConfig
    from inference.toml_file import read_toml

    raw = read_toml(REPO / "conf" / "segmentation" / "presets" / "base.toml", "preset", ValueError)
    assert SegmentationModelConfig.from_dict({**raw, "labels": [5]}).network == "swinunetr"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('structures = ["liver", "spleen", "vertebrae_T12"]', 'structures = ["livr"]'), "livr"),
        (('dev_split = "train"', 'dev_split = "valid"'), "split 'valid'"),
        (("roi_size = [16, 16, 8]", "roi_size = [16, 16, 9]"), "roi_size"),
        (("epochs = 2", "epochs = 0"), "optim.epochs"),
        (("lr = 1e-2", 'lr = "fast"'), "optim.lr"),
        (("flip_axes = [2]", "flip_axes = [3]"), "flip_axes"),
        (("[optim]", "[optim]\nwarmup = 3"), "optim.warmup"),
        (('image = "example_ct_sm.nii.gz", ', ""), "pair 1"),
        (("[augment]", "[evaluate]\ndice_targets = { kidney_left = 0.7 }\n[augment]"), "kidney"),
        (('task = "segmentation"', 'task = "segmentation"\ncolour = 1'), "colour"),
        (("init_filters = 8", "labels = [5]\ninit_filters = 8"), "model.labels"),
    ],
)
def test_bad_values_are_named(
    tiny_config_file: Path, change: tuple[str, str], message: str
) -> None:
    text = tiny_config_file.read_text(encoding="utf-8")
    assert change[0] in text
    tiny_config_file.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(TrainConfigError, match=message):
        load_train_config(tiny_config_file)
