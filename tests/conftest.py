"""Fixtures shared by the whole suite: free ports, a running node, real peers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
# CI sets this so that a missing peer fails the run instead of skipping tests silently.
REQUIRE_PEERS = os.environ.get("VLNODE_REQUIRE_PEERS") == "1"
# dcmtk waits on Nagle's algorithm without this (NOTES.md: 25 times slower).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package; run scripts/setup.sh)"
        if REQUIRE_PEERS:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@dataclass
class NodeProcess:
    """A ``vlnode serve`` subprocess with its own data directory and port."""

    port: int
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, wait: float = 20.0) -> None:
        assert self.log_path is not None
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vlnode.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir.parent,
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited at start:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("node did not start listening")

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=40)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vlnode.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.data_dir.parent,
            timeout=60,
        )


def node_env(port: int, data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLNODE_")}
    env.update(
        VLNODE_NODE__PORT=str(port),
        VLNODE_NODE__BIND_ADDRESS="127.0.0.1",
        VLNODE_NODE__MIN_FREE_DISK_MB="16",
        VLNODE_STORE__DATA_DIR=str(data_dir),
        VLNODE_STUDY__STABLE_SECONDS="2",
        VLNODE_STUDY__CHECK_INTERVAL_SECONDS="0.5",
        PYTHONPATH=str(REPO),
    )
    env.update({f"VLNODE_{k.upper()}": v for k, v in settings.items()})
    return env


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node subprocess, not yet started (tests may adjust ``env`` first)."""
    port = free_port()
    data_dir = tmp_path / "vlnode-data"
    node = NodeProcess(port, data_dir, node_env(port, data_dir), log_path=tmp_path / "node.log")
    yield node
    if node.process is not None and node.process.poll() is None:
        node.process.kill()
        node.process.wait(timeout=10)


@pytest.fixture
def running_node(tmp_path: Path) -> Iterator[object]:
    """An in-process node (listener threads + detector) on a free port; yields the Node."""
    from vlnode.node import Node
    from vlnode.settings import NodeSettings, Settings, StoreSettings, StudySettings

    settings = Settings(
        node=NodeSettings(
            port=free_port(), bind_address="127.0.0.1", min_free_disk_mb=16, max_associations=8
        ),
        store=StoreSettings(data_dir=tmp_path / "vlnode-data"),
        study=StudySettings(stable_seconds=1.0, check_interval_seconds=0.2),
    )
    node = Node(settings)
    node.start()
    yield node
    node.stop()
