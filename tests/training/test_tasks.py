"""Training configurations and packages are dispatched by their task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference.packages import PackageError, read_manifest, verify_package
from inference.reader import StudyReader
from inference.routing import load_routing
from training.config import TrainConfigError, load_train_config
from training.package import weights_bytes, write_package_folder
from vlnode.cli import main


def _package(folder: Path, task: str, files: dict[str, bytes]) -> Path:
    def write(tmp: Path) -> list[str]:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        return list(files)

    write_package_folder(folder, name="thing", version="1", task=task, write_files=write)
    return folder


def test_a_configuration_of_an_unknown_task_names_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "x.toml"
    config.write_text('name = "x"\ntask = "colouring"\n')
    with pytest.raises(TrainConfigError) as err:
        load_train_config(config)
    message = str(err.value)
    assert "colouring" in message and "findings" in message and "segmentation" in message


def test_any_task_package_is_hashed_and_verified_and_names_what_it_lacks(tmp_path: Path) -> None:
    state = {"w": torch.arange(4, dtype=torch.float32)}
    folder = _package(tmp_path / "p", "segmentation", {"weights.safetensors": weights_bytes(state)})
    manifest = verify_package(folder, required=("weights.safetensors",))
    assert manifest.task == "segmentation" and set(manifest.files) == {"weights.safetensors"}
    with pytest.raises(PackageError, match=r"labels\.toml"):
        verify_package(folder, required=("labels.toml",))
    (folder / "weights.safetensors").write_bytes(b"altered")
    with pytest.raises(PackageError, match=r"weights\.safetensors"):
        verify_package(folder)
    with pytest.raises(FileExistsError):  # versions are never overwritten
        _package(folder, "segmentation", {"a": b"1"})


def test_weights_are_stored_as_float16(tmp_path: Path) -> None:
    from safetensors.torch import load

    state = {"w": torch.tensor([0.1, 2.0]), "n": torch.tensor([3])}
    loaded = load(weights_bytes(state))
    assert loaded["w"].dtype == torch.float16 and loaded["n"].dtype == torch.int64


def test_the_reader_refuses_a_package_of_a_task_it_cannot_run(tmp_path: Path) -> None:
    folder = _package(tmp_path / "models" / "odd", "colouring", {"x": b"1"})
    routing = tmp_path / "routing.toml"
    routing.write_text(f'[[rule]]\nname = "ct"\nmodality = "CT"\npackages = ["{folder}"]\n')
    reader = StudyReader(load_routing(routing), torch.device("cpu"))
    with pytest.raises(PackageError, match="colouring"):
        reader.pipeline(str(folder))


def test_evaluate_refuses_a_package_of_an_unknown_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _package(tmp_path / "odd", "colouring", {"x": b"1"})
    assert read_manifest(folder).task == "colouring"
    code = main(["evaluate", "--package", str(folder), "--data", str(tmp_path)])
    assert code == 1
    assert "colouring" in capsys.readouterr().err
    assert json.loads((folder / "package.json").read_text())["task"] == "colouring"
