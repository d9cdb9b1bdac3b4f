"""Training: a two-epoch run, and the same run interrupted after one epoch and resumed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training import fit
from training.config import TrainConfig, TrainConfigError, load_train_config
from training.distributed import DistContext
from training.fit import TrainResult, train

from .conftest import write_train_config

CPU = DistContext(rank=0, world_size=1, device=torch.device("cpu"))


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, archive: Path) -> None:
    config = load_train_config(write_train_config(tmp_path, archive, epochs=2))
    whole = train(config, tmp_path / "whole", CPU, progress=False)
    assert whole.epochs_run == 2
    log = (tmp_path / "whole" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    assert (tmp_path / "whole" / "train_log.csv").read_text().startswith("epoch,step")

    # The same run stopped after epoch 1 (a 1-epoch budget), then resumed to 2 epochs.
    first = replace(config, optim=replace(config.optim, epochs=2, max_steps=3))
    train(first, tmp_path / "split", CPU, progress=False)
    checkpoint = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["step"] == 3
    resumed = train(config, tmp_path / "split", CPU, progress=False)
    assert resumed.epochs_run == 1
    _assert_same_weights(whole.model, resumed.model)


def _stopped_after_three_steps_and_resumed(config: TrainConfig, run_dir: Path) -> TrainResult:
    first = replace(config, optim=replace(config.optim, max_steps=3))
    train(first, run_dir, CPU, progress=False)
    return train(config, run_dir, CPU, progress=False)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        # Adam moves near-zero gradients by about lr; float sums differ in the last bits.
        assert torch.allclose(x, y, atol=1e-3), name


def test_bad_config_values_are_named(tmp_path: Path, archive: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"optim\.batch_size"):
        load_train_config(write_train_config(tmp_path, archive, batch_size=1))
    with pytest.raises(TrainConfigError, match=r"optim\.epochs"):
        load_train_config(write_train_config(tmp_path, archive, epochs=0))
    with pytest.raises(TrainConfigError, match=r"optim\.select"):
        load_train_config(write_train_config(tmp_path, archive, select='"best"'))
    with pytest.raises(TrainConfigError, match=r"optim\.colour"):
        load_train_config(write_train_config(tmp_path, archive, colour=1))


def test_weight_average_becomes_the_model_and_resumes_exactly(
    tmp_path: Path, archive: Path
) -> None:
    config = load_train_config(write_train_config(tmp_path, archive, epochs=2, ema_decay=0.5))
    whole = train(config, tmp_path / "whole", CPU, progress=False)
    live = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    averaged = live["average"]
    # The returned model carries the averaged weights, which differ from the last step's.
    state = whole.model.state_dict()
    for name, value in averaged.items():
        assert torch.equal(state[name], value), name
    name = "image_projection.weight"
    assert not torch.allclose(live["model"][name], averaged[name])

    resumed = _stopped_after_three_steps_and_resumed(config, tmp_path / "split")
    _assert_same_weights(whole.model, resumed.model)


def test_weight_average_decay_is_checked(tmp_path: Path, archive: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"optim\.ema_decay"):
        load_train_config(write_train_config(tmp_path, archive, ema_decay=1.0))


def test_image_image_loss_trains_its_head_and_resumes_exactly(
    tmp_path: Path, archive: Path
) -> None:
    plain = load_train_config(write_train_config(tmp_path, archive, epochs=2))
    config = load_train_config(
        write_train_config(tmp_path, archive, epochs=2, image_image_weight=1.0)
    )
    without = train(plain, tmp_path / "plain", CPU, progress=False)
    whole = train(config, tmp_path / "whole", CPU, progress=False)
    saved = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    head = saved["ssl_head"]
    assert head is not None and saved["optimizer"]["param_groups"][-1]["params"]
    # The head is the training's own: the model (and so the package) has no such weights.
    assert not any(k.startswith("ssl") for k in whole.model.state_dict())
    # The extra loss changes what the image encoder learns.
    name = "image_encoder.net.conv1.weight"
    assert not torch.allclose(without.model.state_dict()[name], whole.model.state_dict()[name])

    resumed = _stopped_after_three_steps_and_resumed(config, tmp_path / "split")
    _assert_same_weights(whole.model, resumed.model)
    again = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["ssl_head"]
    for key, value in head.items():
        assert torch.allclose(value, again[key], atol=1e-3), key


def test_image_image_settings_are_checked(tmp_path: Path, archive: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"optim\.image_image_weight"):
        load_train_config(write_train_config(tmp_path, archive, image_image_weight=-1.0))
    with pytest.raises(TrainConfigError, match=r"optim\.image_image_augment"):
        load_train_config(
            write_train_config(tmp_path, archive, image_image_weight=1.0, image_image_augment=4)
        )


def test_autocast_precision_follows_the_device_and_the_config(
    tmp_path: Path,
    archive: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = load_train_config(write_train_config(tmp_path, archive))
    bf16 = replace(plain, optim=replace(plain.optim, cpu_bfloat16=True))
    cuda = torch.device("cuda")
    assert fit.autocast_dtype(plain, cuda) is torch.float16
    no_amp = replace(plain, optim=replace(plain.optim, mixed_precision=False))
    assert fit.autocast_dtype(no_amp, cuda) is None
    assert fit.autocast_dtype(plain, CPU.device) is None  # float32 unless asked for
    monkeypatch.setattr(fit, "cpu_has_native_bfloat16", lambda: True)
    assert fit.autocast_dtype(bf16, CPU.device) is torch.bfloat16
    # Emulated bfloat16 would be slower than float32: the run says so and keeps float32.
    monkeypatch.setattr(fit, "cpu_has_native_bfloat16", lambda: False)
    assert fit.autocast_dtype(bf16, CPU.device) is None
    assert "no native bfloat16" in capsys.readouterr().out


def test_bfloat16_training_resumes_exactly_and_hands_back_float32_weights(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fit, "cpu_has_native_bfloat16", lambda: True)  # emulated is fine here
    plain = load_train_config(write_train_config(tmp_path, archive, epochs=2))
    config = replace(plain, optim=replace(plain.optim, cpu_bfloat16=True))
    float32 = train(plain, tmp_path / "float32", CPU, progress=False)
    whole = train(config, tmp_path / "whole", CPU, progress=False)
    assert (float32.precision, whole.precision) == ("float32", "bfloat16 autocast")
    for name, value in whole.model.state_dict().items():
        # The package writer needs plain float32 tensors in the standard layout.
        assert value.dtype in (torch.float32, torch.int64) and value.is_contiguous(), name
    # The convolutions really ran in bfloat16: the weights drift from the float32 run's.
    conv = "image_encoder.net.conv1.weight"
    assert not torch.allclose(float32.model.state_dict()[conv], whole.model.state_dict()[conv])

    resumed = _stopped_after_three_steps_and_resumed(config, tmp_path / "split")
    _assert_same_weights(whole.model, resumed.model)
