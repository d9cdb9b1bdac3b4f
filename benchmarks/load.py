"""Load benchmark: 8 concurrent associations of 500 instances each, vlnode against Orthanc.

Eight dcmtk ``storescu`` processes start together, each sending its own 500-instance CT
series (generated once: 64x64 slices, about 9 KB each) over its own association, to
``vlnode serve`` (two listener processes, durable before each success: one ``syncfs`` on a
sealed spool, shared by the instances a process's associations store at the same moment)
and to Orthanc (Debian, its own defaults: SQLite index, ``SyncStorageArea`` on; but
``DicomThreadsCount`` 8, not 4, for with 4 an association beyond the fourth broke off
mid-series with a broken pipe), interleaved round by round so that machine drift hits both
alike. It prints:

* throughput: instances per second from the first connection to the last response, and
  vlnode's as a ratio to Orthanc's (target >= 1.5);
* store latency, p50 and p99 over every instance (target p99 <= 50 ms): the time between
  storescu logging "Sending Store Request" and "Received Store Response", read from its
  log with microsecond timestamps (a dcmtk logger configuration, ``-lc``). That is the
  latency the sender sees, network and the receiver's durable store included, measured by
  the sender that makes the load: no second client competing for the CPU, and no change to
  what storescu does. An instance of 9 KB fits one PDU, so the request's send time is part
  of it but tiny;
* vlnode's peak memory: the largest sum of the resident sizes of the node's process and
  all its descendants (the extra listener process), sampled every 50 ms; ``vlnode serve``
  holds the worker too, torch included, idle here;
* the CPU each receiver's processes used, and the eight storescu, in cores (CPU seconds per
  second of the round): on a machine with few cores the senders compete with the receiver,
  and a receiver that waits on neither shows it.

It checks that every response is Success and that the store holds every instance (vlnode's
database; Orthanc's ``/statistics``), and stops with the reason if not.

Every round's files stay until the run ends (about 50 MB per round at the defaults): on a
file system that makes file creation pay for recent deletions (ext4 without a journal, as on
the development machines; see ingest.file_creation_us), deleting one receiver's round made
the next receiver's round 30-40% slower, and the rounds slowed as the run went on.

Run: ``.venv/bin/python benchmarks/load.py [--rounds 3] [--associations 8] [--instances 500]``.
Needs dcmtk and orthanc (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from store.database import make_engine  # noqa: E402
from store.tables import Instance  # noqa: E402
from tests.dicom_factory import write_ct_study  # noqa: E402

TARGET_RATIO = 1.5
TARGET_P99_MS = 50.0
# Creating an empty file takes about 15 us on a quiet disk here (ingest.file_creation_us).
SLOW_FILE_CREATION_US = 100.0
# storescu's log: every message with a timestamp in microseconds, on stdout.
LOGGER_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.logToStderr = false
log4cplus.appender.console.ImmediateFlush = false
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%Q} %m%n
"""
_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3})\.(\d{3}) (.*)$")


@dataclass(frozen=True)
class Round:
    seconds: float
    latencies_ms: list[float]
    peak_rss_mb: float
    cpu_seconds: float
    senders_cpu_seconds: float


def storescu_log_latencies(log: str) -> tuple[list[float], int, list[str]]:
    """Per-instance latencies (ms), the Success count and the other responses of one log."""
    latencies, successes, failures = [], 0, []
    sent_at: float | None = None
    for line in log.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        hours, minutes, seconds, millis, micros, message = match.groups()
        at = (int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1e3) + int(
            micros
        ) / 1e6
        if message.startswith("Sending Store Request"):
            sent_at = at
        elif message.startswith("Received Store Response"):
            if sent_at is not None:
                latencies.append(((at - sent_at) % 86_400) * 1000)  # across midnight too
                sent_at = None
            if message.startswith("Received Store Response (Success)"):
                successes += 1
            else:
                failures.append(message)
    return latencies, successes, failures


class MemorySampler:
    """Peak of the summed resident size of a process and its descendants (Linux /proc), and
    the CPU time they used meanwhile."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self.cpu_seconds = -sum(_cpu_seconds(p) for p in _family(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_seconds += sum(_cpu_seconds(p) for p in _family(self.pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in _family(self.pid)))
            self._stop.wait(self.interval)


def _family(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):  # the process is gone
                pending.extend(int(child) for child in task.read_text().split())
    return found


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def send(
    groups: list[list[Path]], ae: str, port: int, work: Path
) -> tuple[float, list[float], float]:
    """Send each group over its own storescu association, all at once.

    Returns the seconds, the latencies and the CPU seconds the storescu processes used.
    """
    config = work / "storescu-log.cfg"
    config.write_text(LOGGER_CONFIG)
    senders_cpu = _children_cpu_seconds()
    start = time.perf_counter()
    # Each log goes to a file: eight pipes read one after the other would fill and stall the
    # senders not being read (a pipe holds 64 KiB, about 200 instances of log here).
    logs = [work / f"storescu-{index}.log" for index in range(len(groups))]
    senders = []
    for group, log in zip(groups, logs, strict=True):
        with log.open("w") as log_file:  # the child keeps its own descriptor
            senders.append(
                subprocess.Popen(
                    ["storescu", "-lc", str(config), "-aec", ae, "-nh", "-td", "60", "127.0.0.1"]
                    + [str(port)]
                    + [str(path) for path in group],
                    env=ingest.DCMTK_ENV,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )
    for sender in senders:
        sender.wait()
    elapsed = time.perf_counter() - start
    outputs = [log.read_text(errors="replace") for log in logs]
    senders_cpu = _children_cpu_seconds() - senders_cpu
    latencies: list[float] = []
    for sender, output, group in zip(senders, outputs, groups, strict=True):
        values, successes, failures = storescu_log_latencies(output)
        if sender.returncode != 0 or successes != len(group) or failures:
            raise RuntimeError(
                f"storescu to {ae} exited with {sender.returncode}, {successes} of "
                f"{len(group)} stored; other responses: {failures[:3]}; its log ends:\n"
                + "\n".join(output.splitlines()[-10:])
            )
        latencies.extend(values)
    return elapsed, latencies, senders_cpu


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # children waited for so far
    return usage.ru_utime + usage.ru_stime


def stored_in_vlnode(work: Path) -> int:
    engine = make_engine(f"sqlite:///{work / 'vlnode-data' / 'vlnode.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Instance)) or 0)
    finally:
        engine.dispose()


def stored_in_orthanc(work: Path) -> int:
    http_port = json.loads((work / "orthanc.json").read_text())["HttpPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=30) as rsp:
        return int(json.load(rsp)["CountInstances"])


SPOOL_SYNC = "auto"  # store.spool_sync of the node (--spool-sync)


@contextmanager
def vlnode_with_pid(work: Path) -> Iterator[tuple[str, int, int]]:
    """``vlnode serve`` as in the ingest benchmark (two listener processes), and its pid."""
    with ingest.vlnode(work, True, SPOOL_SYNC) as (ae, port):
        yield ae, port, _listener_pid(port)


def _listener_pid(port: int) -> int:
    # The process that listens on the port: the node's main process (its parent is us).
    inode = _listening_inode(port)
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == f"socket:[{inode}]":
                return int(fd.parts[2])
        except OSError:
            continue
    raise RuntimeError(f"no process found listening on port {port}")


def _listening_inode(port: int) -> str:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
            return fields[9]
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def orthanc_with_pid(work: Path) -> Iterator[tuple[str, int, int]]:
    with ingest.orthanc(work, True) as (ae, port):
        yield ae, port, _listener_pid(port)


Receiver = Callable[[Path], AbstractContextManager[tuple[str, int, int]]]
RECEIVERS: dict[str, tuple[Receiver, Callable[[Path], int]]] = {
    "orthanc": (orthanc_with_pid, stored_in_orthanc),
    "vlnode": (vlnode_with_pid, stored_in_vlnode),
}


def measure(groups: list[list[Path]], work: Path, rounds: int) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {name: [] for name in RECEIVERS}
    expected = sum(len(group) for group in groups)
    for number in range(rounds):
        for name, (receiver, stored) in RECEIVERS.items():
            round_dir = work / f"{name}-{number}"
            round_dir.mkdir()
            with receiver(round_dir) as (ae, port, pid):
                ingest.settle()
                with MemorySampler(pid) as memory:
                    seconds, latencies, senders_cpu = send(groups, ae, port, round_dir)
                count = stored(round_dir)
            if count != expected:
                raise RuntimeError(f"{name} holds {count} instances of the {expected} sent")
            results[name].append(
                Round(seconds, latencies, memory.peak_kb / 1024, memory.cpu_seconds, senders_cpu)
            )
            # Kept until the end: deleting a round's 4,000 files here would slow the next
            # receiver's file creation for a minute or more (ingest.file_creation_us).
            print(f"  round {number + 1} {name:8s} {seconds:6.2f} s", flush=True)
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(results: dict[str, list[Round]], instances: int) -> None:
    rates = {}
    print()
    for name, rounds in results.items():
        median = statistics.median(r.seconds for r in rounds)
        rates[name] = instances / median
        latencies = [value for r in rounds for value in r.latencies_ms]
        spread = ", ".join(f"{r.seconds:.2f}" for r in rounds)
        cpu = statistics.median(r.cpu_seconds / r.seconds for r in rounds)
        senders = statistics.median(r.senders_cpu_seconds / r.seconds for r in rounds)
        print(
            f"{name:8s} median {median:6.2f} s  {rates[name]:5.0f} instances/s  "
            f"latency p50 {percentile(latencies, 0.5):5.1f} ms  "
            f"p99 {percentile(latencies, 0.99):5.1f} ms  "
            f"peak RSS {max(r.peak_rss_mb for r in rounds):4.0f} MB  CPU {cpu:4.2f} cores "
            f"(storescu {senders:4.2f})  "
            f"(rounds: {spread} s)"
        )
    ratio = rates["vlnode"] / rates["orthanc"]
    vlnode = [value for r in results["vlnode"] for value in r.latencies_ms]
    p99 = percentile(vlnode, 0.99)
    print(
        f"ratio vlnode/orthanc throughput: {ratio:.2f} (target >= {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'missed'})"
    )
    print(
        f"vlnode p99 store latency: {p99:.1f} ms (target <= {TARGET_P99_MS:.0f} ms: "
        f"{'met' if p99 <= TARGET_P99_MS else 'missed'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--instances", type=int, default=500, help="per association")
    parser.add_argument("--spool-sync", choices=["auto", "sealed", "portable"], default="auto")
    args = parser.parse_args()
    global SPOOL_SYNC
    SPOOL_SYNC = args.spool_sync
    for tool in ("storescu", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run scripts/setup.sh", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="vlnode-load-") as tmp:
        work = Path(tmp)
        _, files = write_ct_study(
            work / "series", (args.instances,) * args.associations, rows=64, columns=64
        )
        groups = [
            files[i * args.instances : (i + 1) * args.instances] for i in range(args.associations)
        ]
        size = sum(p.stat().st_size for p in files) / len(files) / 1e3
        creation_us = ingest.file_creation_us(work)
        print(
            f"{args.associations} associations x {args.instances} instances ({size:.1f} KB "
            f"each), {args.rounds} rounds, {dt.date.today()}; all dcmtk processes with "
            f"TCP_NODELAY=1; vlnode: 2 listener processes, store.spool_sync = {SPOOL_SYNC}; "
            "Orthanc: its defaults, "
            f"DicomThreadsCount = {ingest.ORTHANC_DICOM_THREADS}; creating a file here takes "
            f"{creation_us:.0f} us"
        )
        if creation_us > SLOW_FILE_CREATION_US:
            print(
                "  (slow: many files were deleted near this folder in the last minutes, and "
                "both receivers pay for it; rerun later for steady rates)"
            )
        results = measure(groups, work, args.rounds)
        report(results, len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
