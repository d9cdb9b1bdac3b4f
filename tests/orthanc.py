"""A real Orthanc PACS (Debian ``orthanc``) for tests: own config, free ports, REST helpers."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import DCMTK_ENV, free_port, require_tool


@dataclass
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int
    log_path: Path

    def rest(self, method: str, path: str, body: bytes | dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
        if response.headers.get_content_type() == "application/json":
            return json.loads(raw)
        return raw

    def upload(self, file: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.rest("POST", "/instances", file.read_bytes())
        return result

    def instances_of_modality(self, study_id: str, modality: str) -> list[str]:
        found = []
        for series in self.rest("GET", f"/studies/{study_id}/series"):
            if series["MainDicomTags"].get("Modality") == modality:
                found.extend(series["Instances"])
        return found


@contextmanager
def running_orthanc(work: Path, modalities: dict[str, tuple[str, int]]) -> Iterator[Orthanc]:
    """Orthanc with its own storage under ``work`` and ``modalities`` it may send to."""
    require_tool("Orthanc")
    work.mkdir(parents=True, exist_ok=True)
    orthanc = Orthanc("ORTHANC", free_port(), free_port(), work / "orthanc.log")
    config = {
        "Name": "vlnode-test",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "DicomAet": orthanc.aet,
        "DicomPort": orthanc.dicom_port,
        "HttpPort": orthanc.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        # vlnode re-sends an output under the same SOP Instance UID when it re-reads a study.
        "OverwriteInstances": True,
        "DicomModalities": {
            name: [ae, "127.0.0.1", port] for name, (ae, port) in modalities.items()
        },
        "Plugins": [],
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config))
    with orthanc.log_path.open("wb") as log:
        process = subprocess.Popen(["Orthanc", str(path)], env=DCMTK_ENV, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                orthanc.rest("GET", "/system")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Orthanc did not start:\n{orthanc.log_path.read_text()}"
                    ) from None
                time.sleep(0.2)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
