"""Turnaround benchmark: from a study becoming ready to its last output acknowledged.

For one chest X-ray (a cxr-covid-notes image as DX) and one generated 300-slice 512x512 CT,
each round starts from a fresh store with the study received, queues its job (the moment the
study is ready), lets the worker read it with the committed packages of conf/routing.toml
(loaded once beforehand, after one untimed round, as in a running node) and the sender deliver
the SR to a real destination (dcmtk ``storescp``), and stops the clock at the destination's
acknowledgement. The first round after start, which pays one-off imports, is reported apart.
It prints the median of each figure against its target, the CT's breakdown (headers read from
the spool, rebuild, each model, encode, send), and as the peer measured in the same run the
time dcmtk's ``storescu`` takes to send the same SR file to the same ``storescp``.

Run: ``.venv/bin/python benchmarks/turnaround.py [--rounds 3] [--slices 300]``.
Needs dcmtk (scripts/setup.sh) and ../shared/data for the chest X-ray.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from dicom_node.sender import Sender  # noqa: E402
from store.database import make_engine, upgrade_schema  # noqa: E402
from store.jobs import queue_jobs_for_quiet_studies  # noqa: E402
from tests.chest_example import chest_xray_dicom  # noqa: E402
from tests.dicom_factory import write_ct_study  # noqa: E402
from tests.received import receive_files  # noqa: E402
from vlnode.settings import DeliverySettings, Destination, Settings, StoreSettings  # noqa: E402
from vlnode.workers import build_worker  # noqa: E402

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SHARED_DATA = REPO.parent / "shared" / "data"
TARGETS = {"chest X-ray": 2.0, "CT": 45.0}  # seconds on this CPU (issue 13)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def receive(settings: Settings, files: list[Path]) -> None:
    """Put the study in the spool and the store, as the listener would have."""
    engine = make_engine(settings.database_url)
    receive_files(engine, settings.store.data_dir, files, "BENCH")
    engine.dispose()


def one_round(work: Path, files: list[Path], port: int) -> tuple[float, dict[str, float]]:
    """Seconds from ready to acknowledged, and the stage breakdown."""
    data_dir = work / f"data-{time.monotonic_ns()}"
    settings = Settings(
        store=StoreSettings(data_dir=data_dir),
        destinations=(Destination(name="dest", ae_title="DEST", host="127.0.0.1", port=port),),
        delivery=DeliverySettings(poll_interval_seconds=0.01),
    )
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    receive(settings, files)
    worker = build_worker(settings, engine, "bench")
    for rule in worker.reader.table.rules:  # a running node has its packages loaded
        for package in rule.packages:
            worker.reader.pipeline(package)
    sender = Sender(settings, engine, "bench-sender")
    started = time.perf_counter()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    queue_jobs_for_quiet_studies(engine, 1.0, now=later)
    outcome = worker.run_once()
    read = time.perf_counter()
    if outcome is None or outcome.state != "done":
        raise SystemExit(f"turnaround: the job did not complete: {outcome}")
    while sender.run_once():
        pass
    total = time.perf_counter() - started
    timings = dict(outcome.timings)
    timings.pop("package load", None)
    timings["send"] = time.perf_counter() - read
    engine.dispose()
    shutil.rmtree(data_dir)
    return total, timings


def peer_send(outputs: list[Path], port: int) -> float:
    """storescu sending the objects vlnode sent for one study (SR, and SEG for a CT)."""
    started = time.perf_counter()
    subprocess.run(
        # -R: propose only the files' own SOP classes (the default list lacks SR and SEG).
        ["storescu", "-R", "-aec", "DEST", "127.0.0.1", str(port), *map(str, outputs)],
        env=DCMTK_ENV,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    for tool in ("storescp", "storescu"):
        if shutil.which(tool) is None:
            print(f"turnaround: {tool} is not installed; run scripts/setup.sh", file=sys.stderr)
            return 2
    if not (SHARED_DATA / "cxr-covid-notes").is_dir():
        print(f"turnaround: {SHARED_DATA}/cxr-covid-notes is missing", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vlnode-turnaround-") as tmp:
        work = Path(tmp)
        port = free_port()
        received = work / "received"
        received.mkdir()
        destination = subprocess.Popen(
            ["storescp", "-aet", "DEST", "-od", str(received), "+xa", str(port)],
            env=DCMTK_ENV,
        )
        try:
            time.sleep(0.5)
            cases = {
                "chest X-ray": [chest_xray_dicom(SHARED_DATA, work / "cxr" / "cxr.dcm")],
                "CT": write_ct_study(work / "ct", (args.slices,), rows=512, columns=512)[1],
            }
            for name, files in cases.items():
                # A running node has read studies before: the first read after start also
                # pays one-off imports and caches (highdicom's about 0.3 s), reported apart.
                first, _ = one_round(work, files, port)
                totals, stages = [], []
                last_round = time.time()
                for _ in range(args.rounds):
                    last_round = time.time()
                    total, timings = one_round(work, files, port)
                    totals.append(total)
                    stages.append(timings)
                median = statistics.median(totals)
                # Each round rewrites the same files (same UIDs): the last round's are this case's.
                outputs = [p for p in received.iterdir() if p.stat().st_mtime >= last_round - 1]
                peer = statistics.median(peer_send(outputs, port) for _ in range(args.rounds))
                print(
                    f"{name} ({len(files)} instance(s)): {median:.2f} s from ready to "
                    f"acknowledged (median of {args.rounds}; target {TARGETS[name]:.0f} s: "
                    f"{median / TARGETS[name]:.2f} of it; first study after start "
                    f"{first:.2f} s); storescu sending the same {len(outputs)} object(s): "
                    f"{peer:.3f} s (vlnode's send stage / storescu: "
                    f"{statistics.median(s['send'] for s in stages) / peer:.2f})"
                )
                for key in stages[0]:
                    value = statistics.median(s.get(key, 0.0) for s in stages)
                    print(f"    {key:<32} {value:7.3f} s")
        finally:
            destination.terminate()
            destination.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
