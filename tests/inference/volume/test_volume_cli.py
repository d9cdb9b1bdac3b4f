"""The ``vlnode volume`` command: a description per series, NIfTI on request, clear failures."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pytest
from nifti_compare import assert_matches_nifti
from volume_factory import ct_stack, dx_image, write

from inference.volume import Volume3D, find_series, rebuild_series
from vlnode.cli import main


def test_describes_a_series_and_writes_nifti(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data / "dicom-series" / "generic" / "compressed_jpegls" / "001"
    out = tmp_path / "out.nii.gz"
    assert main(["volume", str(folder), "--nifti", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MR volume (4, 256, 256)" in printed
    assert "spacing 1 x 1 x 1 mm" in printed
    (files,) = find_series(folder).values()
    volume = rebuild_series(files)
    assert isinstance(volume, Volume3D)
    # The written file is a faithful copy: same values at the same world positions.
    written = cast(nib.Nifti1Image, nib.load(out))
    assert written.get_data_dtype() == np.uint16
    assert_matches_nifti(volume, str(out), exact=True)


def test_failure_is_one_line_and_exit_status_1(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data / "dicom-series" / "failing" / "gantrytilting"
    assert main(["volume", str(folder)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "gantry tilt of 14.0 degrees" in captured.err
    assert "Traceback" not in captured.err


def test_tilt_resample_option_rebuilds_the_tilted_series(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data / "dicom-series" / "failing" / "gantrytilting"
    assert main(["volume", str(folder), "--tilt", "resample"]) == 0
    assert "CT volume (4, 512, 512)" in capsys.readouterr().out


def test_empty_folder_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["volume", str(tmp_path)]) == 1
    assert "no DICOM series found" in capsys.readouterr().err


def test_projection_images_are_described_one_per_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = np.zeros((2, 4, 4), dtype=np.uint16)
    write([dx_image(frames, photometric="MONOCHROME1")], tmp_path)
    assert main(["volume", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "2 projection image(s)" in printed
    assert "0.139 x 0.139 mm (ImagerPixelSpacing)" in printed
    assert printed.count("frame ") == 2


def test_a_single_file_can_be_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets, _ = ct_stack(1)
    (path,) = write(datasets, tmp_path)
    assert main(["volume", str(path)]) == 0
    assert "CT volume (1, 6, 5)" in capsys.readouterr().out


def test_series_option_picks_one_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = ct_stack(2)
    second, _ = ct_stack(3)
    write([*first, *second], tmp_path)
    assert main(["volume", str(tmp_path), "--series", second[0].SeriesInstanceUID]) == 0
    printed = capsys.readouterr().out
    assert "CT volume (3, 6, 5)" in printed and "(2, 6, 5)" not in printed
