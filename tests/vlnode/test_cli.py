"""The command line as a newcomer uses it: serve on embedded defaults, echo, status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DCMTK_ENV, REPO, require_tool
from tests.dicom_factory import write_ct_study


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLNODE_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def vlnode(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlnode.cli", *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As the node binds: connections left in TIME_WAIT by an earlier run do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


@pytest.mark.peer
def test_serve_on_embedded_defaults_then_status(tmp_path: Path) -> None:
    if not port_is_free(11112):
        pytest.skip("port 11112 is in use on this machine")
    storescu = require_tool("storescu")
    study_uid, files = write_ct_study(tmp_path / "study", (3, 2))
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    node = subprocess.Popen(
        [sys.executable, "-m", "vlnode.cli", "serve"],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and port_is_free(11112):
            time.sleep(0.1)
        echo = vlnode("echo", "VLNODE@127.0.0.1:11112", cwd=workdir)
        assert echo.returncode == 0 and "success" in echo.stdout
        sent = subprocess.run(
            [storescu, "-aec", "VLNODE", "127.0.0.1", "11112", *map(str, files)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        assert (workdir / "vlnode-data" / "vlnode.db").is_file()
        assert len(list((workdir / "vlnode-data" / "spool").rglob("*.dcm"))) == 5
        status = vlnode("status", cwd=workdir)
        assert status.returncode == 0, status.stderr
        assert "studies 1, series 2, instances 5" in status.stdout
        assert study_uid in status.stdout and "STORESCU" in status.stdout
    finally:
        node.terminate()
        output, _ = node.communicate(timeout=40)
    assert node.returncode == 0, output
    assert "listening as VLNODE on 0.0.0.0:11112" in output
    # Logs name SOP Instance UIDs, never the patient (the factory writes TEST^PHANTOM).
    assert "PHANTOM" not in output


def test_bad_configuration_stops_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[node]\nport = 0\n")
    result = vlnode("--config", str(config), "serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "node.port = 0" in result.stderr and "greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_echo_to_nobody_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = vlnode("echo", f"NOBODY@127.0.0.1:{port}", "--timeout", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "NOBODY@127.0.0.1" in result.stdout
    bad = vlnode("echo", "not-a-peer", cwd=tmp_path)
    assert bad.returncode == 2 and "AE_TITLE@host:port" in bad.stderr
