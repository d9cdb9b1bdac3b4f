"""No data lost on a crash: SIGKILL the node in the middle of a storescu transfer."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from store.database import make_engine
from store.tables import Instance, Job
from tests.conftest import DCMTK_ENV, NodeProcess, require_tool
from tests.dicom_factory import write_ct_study


def acknowledged_files(storescu_output: str) -> list[Path]:
    """Files for which storescu received a Success response (its verbose log)."""
    acknowledged, current = [], None
    for line in storescu_output.splitlines():
        sending = re.search(r"Sending file: (.+)$", line)
        if sending:
            current = Path(sending.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def instance_count(data_dir: Path) -> int:
    engine = make_engine(f"sqlite:///{data_dir / 'vlnode.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Instance)) or 0)
    except Exception:
        return 0
    finally:
        engine.dispose()


@pytest.mark.peer
@pytest.mark.slow
def test_sigkill_mid_transfer_loses_nothing(node_process: NodeProcess, tmp_path: Path) -> None:
    tool = require_tool("storescu")
    node_process.env["VLNODE_STUDY__STABLE_SECONDS"] = "4"
    _, files = write_ct_study(tmp_path / "study", (150, 150), rows=256, columns=256)
    node_process.start()
    sender = subprocess.Popen(
        [
            tool,
            "-v",
            "-aec",
            "VLNODE",
            "-td",
            "10",
            "127.0.0.1",
            str(node_process.port),
            *map(str, files),
        ],
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while instance_count(node_process.data_dir) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    node_process.kill()  # SIGKILL: no clean-up of any kind
    output, _ = sender.communicate(timeout=60)
    acknowledged = acknowledged_files(output)
    assert 60 <= len(acknowledged) < len(files), output[-2000:]

    # Restart: every acknowledged instance is in the store and on disk, byte for byte.
    node_process.start()
    engine = make_engine(f"sqlite:///{node_process.data_dir / 'vlnode.db'}")
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Instance.sop_instance_uid, Instance.file_path)).all())
    for path in acknowledged:
        sent = dcmread(path)
        assert sent.SOPInstanceUID in stored, f"acknowledged {path.name} is not in the store"
        kept = dcmread(node_process.data_dir / stored[sent.SOPInstanceUID])
        assert kept.PixelData == sent.PixelData
    assert not list(node_process.data_dir.rglob("*.partial"))  # leftovers cleaned at start

    # The PACS re-sends what was not acknowledged; the study then becomes ready exactly once.
    rest = [p for p in files if p not in set(acknowledged)]
    resent = subprocess.run(
        [tool, "-aec", "VLNODE", "127.0.0.1", str(node_process.port), *map(str, rest)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resent.returncode == 0, resent.stderr
    assert instance_count(node_process.data_dir) == len(files)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            jobs = conn.scalar(select(func.count()).select_from(Job))
        if jobs:
            break
        time.sleep(0.2)
    time.sleep(5)  # longer than the quiet period: no second job may appear
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Job)) == 1
    engine.dispose()
    assert node_process.stop() == 0
