"""The 3D smoke run: phantom CT studies in a DICOM archive (reports table and SR), trained
with the same code at ``spatial_dims = 3``, checkpointed, resumed and evaluated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from tests.dicom_factory import ct_slice
from training.archive import read_archive
from training.config import load_train_config
from training.distributed import DistContext
from training.fit import train
from training.package import write_package
from training.workflow import evaluate_package

CPU = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")

MODEL = """
embed_dim = 16
[image]
architecture = "resnet"
spatial_dims = 3
image_size = [8, 24, 24]
layers = [1, 1, 1, 1]
widths = [4, 8, 8, 16]
feature_dim = 16
[text]
source = "scratch"
vocab_size = 200
hidden_size = 16
num_layers = 1
num_heads = 2
intermediate_size = 32
max_length = 24
"""

CATALOGUE = """
[[finding]]
name = "sphere"
positive = ["bright sphere"]
negative = ["no sphere"]
label = { column = "sphere", value = "1" }
"""


def _phantom_study(folder: Path, sphere: bool, slices: int = 10) -> str:
    study = generate_uid()
    series = generate_uid()
    zz, yy, xx = np.mgrid[:slices, :32, :32]
    rng = np.random.default_rng(len(study))
    volume = (1024 + 40 + rng.normal(0, 10, (slices, 32, 32))).astype(np.uint16)  # water
    if sphere:
        volume[(zz - 5) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 30] = 1024 + 900
    folder.mkdir(parents=True)
    for i in range(slices):
        ds = ct_slice(study, series, i, rows=32, columns=32)
        ds.AccessionNumber = f"ACC{study[-6:]}"
        ds.PixelData = volume[i].tobytes()
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return study


def _basic_text_sr(path: Path, study: str, findings: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "SR", study, generate_uid()
    ds.ValueType = "CONTAINER"
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", findings
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "121071", "DCM"
    concept.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    ds.ContentSequence = Sequence([item])
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def dicom_archive(tmp_path: Path) -> Path:
    root = tmp_path / "ct-archive"
    rows = []
    for n in range(8):
        sphere = n % 2 == 0
        study = _phantom_study(root / f"study{n}", sphere)
        text = "Bright sphere in the centre." if sphere else "No sphere, uniform water."
        if n == 7:
            # This study's report arrives as a Basic Text SR inside the archive.
            _basic_text_sr(root / f"study{n}" / "sr.dcm", study, text)
            rows.append(
                {"StudyInstanceUID": study, "findings": "", "split": "train", "sphere": "0"}
            )
            continue
        rows.append(
            {
                "StudyInstanceUID": study,
                "findings": text,
                "split": "dev" if n in (5, 6) else "train",
                "sphere": "1" if sphere else "0",
            }
        )
    _phantom_study(root / "unreported", sphere=True)  # no report: counted and skipped
    with (root / "reports.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_dicom_archive_reads_table_and_sr_reports(dicom_archive: Path) -> None:
    archive = read_archive(dicom_archive)
    assert archive.summary.counts() == {"missing report": 1}
    assert len(archive.records) == 8
    from_sr = [r for r in archive.records if r.section("findings") == "No sphere, uniform water."]
    assert len(from_sr) == 4  # three from the table, one from the SR
    assert all(len(r.sources) == 10 for r in archive.records)
    assert all(r.label("sphere") in ("0", "1") for r in archive.records)


def test_3d_train_checkpoint_resume_evaluate(tmp_path: Path, dicom_archive: Path) -> None:
    (tmp_path / "ct3d.toml").write_text(MODEL, encoding="utf-8")
    (tmp_path / "cat.toml").write_text(CATALOGUE, encoding="utf-8")
    (tmp_path / "train.toml").write_text(
        "\n".join(
            [
                'name = "phantom-3d"',
                'preset = "ct3d.toml"',
                'catalogue = "cat.toml"',
                "[data]",
                f'archive = "{dicom_archive}"',
                'text_views = [["findings"]]',
                "[optim]",
                "epochs = 2",
                "batch_size = 2",
                "num_threads = 1",
                "max_steps = 3",
            ]
        ),
        encoding="utf-8",
    )
    config = load_train_config(tmp_path / "train.toml")
    run = tmp_path / "run"
    first = train(config, run, CPU, progress=False)
    assert first.train_records == 6 and (run / "checkpoint.pt").is_file()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 0
    from dataclasses import replace

    resumed = train(replace(config, optim=replace(config.optim, max_steps=0)), run, CPU, False)
    assert resumed.epochs_run == 1
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    package = tmp_path / "models" / "phantom-3d" / "1"
    write_package(
        package,
        "phantom-3d",
        "1",
        "findings",
        resumed.model,
        resumed.tokenizer,
        config.catalogue,
    )
    results = evaluate_package(package, dicom_archive, "dev", replicates=20)
    sphere = results["findings"]["sphere"]
    assert sphere["n"] == 2 and sphere["positives"] == 1
    assert 0.0 <= sphere["auc"]["value"] <= 1.0
