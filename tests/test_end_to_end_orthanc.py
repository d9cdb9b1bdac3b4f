"""End to end with a real PACS: Orthanc sends studies to vlnode and gets SR and SEG back.

The acceptance of the read-and-return, impression and segmentation issues: Orthanc (Debian)
and ``vlnode serve`` on free ports, with the shipped routing; the real CT of
../shared/data/ct-totalsegmentator (repaired: its UIDs are empty) and a chest X-ray built from
a cxr-covid-notes image are uploaded to Orthanc, which is asked over REST to send each study
to vlnode. The SR vlnode sends back must be in the same study in Orthanc, with its findings
and their probabilities, and pass dciodvfy; the CT's study must also hold one SEG, which
passes dciodvfy and which the SR references with the structures' volumes, and the CT's SR
carries the impression package's text.
"""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.chest_example import chest_xray_dicom
from tests.conftest import NodeProcess, node_env, require_tool
from tests.ct_example import repaired_example_ct
from tests.orthanc import Orthanc, running_orthanc

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _content_items(ds: Dataset) -> list[Dataset]:
    items = []
    for item in ds.get("ContentSequence", []):
        items.append(item)
        items.extend(_content_items(item))
    return items


def _probabilities(sr: Dataset) -> dict[str, float]:
    """Concept name -> numeric value of every probability measurement in the SR."""
    found = {}
    for item in _content_items(sr):
        if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
            measured = item.MeasuredValueSequence[0]
            unit = measured.MeasurementUnitsCodeSequence[0].CodeValue
            if unit in ("1", "{probability}"):
                name = item.ConceptNameCodeSequence[0].CodeMeaning
                found[name] = float(measured.NumericValue)
    return found


def _wait_for(orthanc: Orthanc, study_id: str, modality: str, timeout: float = 240) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = orthanc.instances_of_modality(study_id, modality)
        if found:
            return found
        time.sleep(1)
    raise AssertionError(
        f"no {modality} arrived in Orthanc's study {study_id} within {timeout:.0f} s"
    )


def _volumes_ml(sr: Dataset) -> list[float]:
    """Every volume measurement (mL) in the SR: one per segmented structure."""
    found = []
    for item in _content_items(sr):
        if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
            measured = item.MeasuredValueSequence[0]
            if measured.MeasurementUnitsCodeSequence[0].CodeValue == "mL":
                found.append(float(measured.NumericValue))
    return found


def _referenced_uids(sr: Dataset) -> set[str]:
    return {
        str(ref.ReferencedSOPInstanceUID)
        for item in _content_items(sr)
        for ref in item.get("ReferencedSOPSequence", [])
    }


def _impressions(sr: Dataset) -> list[str]:
    return [
        str(item.TextValue)
        for item in _content_items(sr)
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == "Impression"
    ]


def _dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    tool = require_tool("dciodvfy")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [
        ln for ln in lines if ln.startswith("Warning")
    ]


def test_orthanc_sends_studies_and_gets_findings_back(
    tmp_path: Path, shared_data: Path, node_process: NodeProcess
) -> None:
    require_tool("storescu")
    node_port = node_process.port
    with running_orthanc(tmp_path / "orthanc", {"vlnode": ("VLNODE", node_port)}) as orthanc:
        config = tmp_path / "vlnode.toml"
        config.write_text(
            "[[destinations]]\n"
            f'name = "orthanc"\nae_title = "{orthanc.aet}"\nhost = "127.0.0.1"\n'
            f"port = {orthanc.dicom_port}\n"
        )
        node_process.env = node_env(node_port, node_process.data_dir)
        node_process.env["VLNODE_CONFIG"] = str(config)
        node_process.env["VLNODE_DELIVERY__FIRST_RETRY_SECONDS"] = "1"
        node_process.start(wait=60)

        ct_files = repaired_example_ct(tmp_path / "ct")
        xray = chest_xray_dicom(shared_data, tmp_path / "cxr" / "cxr.dcm")
        studies = {}
        for name, files in (("ct", ct_files), ("xray", [xray])):
            uploaded = [orthanc.upload(f) for f in files]
            studies[name] = uploaded[0]["ParentStudy"]
        for study_id in studies.values():
            job = orthanc.rest(
                "POST", "/modalities/vlnode/store", {"Resources": [study_id], "Synchronous": True}
            )
            assert job["FailedInstancesCount"] == 0, job

        for name, study_id in studies.items():
            sr_ids = _wait_for(orthanc, study_id, "SR")
            assert len(sr_ids) == 1, f"{name}: {len(sr_ids)} SR instances, expected one"
            raw = orthanc.rest("GET", f"/instances/{sr_ids[0]}/file")
            sr = pydicom.dcmread(io.BytesIO(raw))
            source_study = orthanc.rest("GET", f"/studies/{study_id}")
            assert sr.StudyInstanceUID == source_study["MainDicomTags"]["StudyInstanceUID"]
            probabilities = _probabilities(sr)
            assert probabilities, f"{name}: the SR has no probability measurements"
            assert all(0.0 <= p <= 1.0 for p in probabilities.values())
            path = tmp_path / f"{name}-sr.dcm"
            path.write_bytes(raw)
            errors, warnings = _dciodvfy_errors(path)
            print(f"{name} SR dciodvfy warnings:", *warnings, sep="\n  ")
            assert not errors, "\n".join(errors)
        ct_sr = pydicom.dcmread(tmp_path / "ct-sr.dcm")
        names = {n.lower() for n in _probabilities(ct_sr)}
        assert names, "the CT's SR names no finding"

        (seg_id,) = _wait_for(orthanc, studies["ct"], "SEG")
        raw = orthanc.rest("GET", f"/instances/{seg_id}/file")
        seg = pydicom.dcmread(io.BytesIO(raw))
        assert seg.StudyInstanceUID == ct_sr.StudyInstanceUID
        assert str(seg.SOPInstanceUID) in _referenced_uids(ct_sr)
        labels = {str(s.SegmentLabel).lower() for s in seg.SegmentSequence}
        assert "liver" in labels, labels
        volumes = _volumes_ml(ct_sr)
        assert len(volumes) == len(seg.SegmentSequence) and all(v > 0 for v in volumes), volumes
        (tmp_path / "ct-seg.dcm").write_bytes(raw)
        errors, warnings = _dciodvfy_errors(tmp_path / "ct-seg.dcm")
        print("CT SEG dciodvfy warnings:", *warnings, sep="\n  ")
        assert not errors, "\n".join(errors)
        assert not orthanc.instances_of_modality(studies["xray"], "SEG")
        (impression,) = _impressions(ct_sr)
        assert impression.strip()
        print("CT impression:", impression)

        status = node_process.cli("status")
        assert status.returncode == 0 and "done 2" in status.stdout, status.stdout
        search = node_process.cli("search", "axial CT of the abdomen", "--top", "2")
        assert search.returncode == 0, search.stderr
        ct_uid = orthanc.rest("GET", f"/studies/{studies['ct']}")["MainDicomTags"][
            "StudyInstanceUID"
        ]
        assert ct_uid in search.stdout, search.stdout
        assert node_process.stop() == 0
