"""Ingest benchmark: vlnode against dcmtk storescp and Orthanc, same series, same rounds.

Sends one generated 300-slice 512x512 CT series (about 157 MB) over loopback with dcmtk's
``storescu`` to three receivers, interleaved round by round so that machine drift hits all
of them alike, and prints the median throughput of each and vlnode's ratios:

* ``storescp`` writing to disk without fsync: the speed reference;
* Orthanc (Debian) with its SQLite index and ``SyncStorageArea`` on: the durable peer;
* ``vlnode serve`` with two listener processes: durable before each success status (the data
  set written as it arrives, linked under its final name, one ``syncfs`` on a sealed spool or
  ``fdatasync`` + folder ``fsync`` on a portable one, then the row commit).

Then the same with 4 concurrent associations (aggregate throughput), and the durability
floor: the same files written with vlnode's own durable steps and no network.

Run: ``.venv/bin/python benchmarks/ingest.py [--rounds 5] [--slices 300] [--spool-sync auto]``.
Needs dcmtk and orthanc (scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom.filereader import read_file_meta_info  # noqa: E402

from tests.dicom_factory import write_ct_study  # noqa: E402

# dcmtk (and Orthanc, built on it) waits on Nagle's algorithm without this (NOTES.md).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(args: list[str], log: Path, **options: Any) -> subprocess.Popen[bytes]:
    """Start a receiver with its output in ``log``, so that a failed start can say why."""
    with log.open("wb") as output:  # the child keeps its own descriptor
        return subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, **options)


def wait_for_port(
    name: str, port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    """Wait until ``port`` accepts; if the receiver exits or never listens, say why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode} at start; its output:\n" + _tail(log)
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(
        f"{name} does not listen on port {port} after {timeout:g} s; its output:\n" + _tail(log)
    )


def _tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace").strip() if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


def settle() -> None:
    # Write out what earlier rounds left dirty, so that a round does not pay for the last one's
    # write-back. (Deletions cost the next round more than that: see file_creation_us.)
    os.sync()
    time.sleep(1.0)


def file_creation_us(folder: Path, count: int = 100) -> float:
    """Microseconds to create one empty file in ``folder`` (a probe; the files are kept).

    On ext4 without a journal (the development machines' disk), creating a file skips, one by
    one, every inode of its block group freed in the last 60 s (360 s while not yet written
    out), and each skip costs a buffer look-up: after 4,000 files were deleted nearby, a
    create took 0.9 ms instead of 15 us, and a quarter of the CPU of a 4,000-instance round
    went there. A benchmark that deletes its rounds as it goes makes each receiver pay for the
    one measured before it; this probe shows whether the machine still carries such a debt.
    """
    probe = folder / ".creation-probe"
    probe.mkdir(exist_ok=True)
    start = time.perf_counter()
    for index in range(count):
        os.close(os.open(probe / f"{index}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return (time.perf_counter() - start) / count * 1e6


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def storescp(work: Path, fork: bool) -> Iterator[tuple[str, int]]:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    args = ["storescp", "-aet", "STORESCP", "-od", str(out), "+xa", str(port)]
    if fork:
        args.insert(1, "--fork")
    log = work / "storescp.log"
    process = start_receiver(args, log, env=DCMTK_ENV)
    try:
        wait_for_port("storescp", port, process, log)
        yield "STORESCP", port
    finally:
        stop(process)


ORTHANC_SYNC_STORAGE_AREA = True  # Orthanc's own default, written out so it is visible
# Associations Orthanc serves at once (its default is 4): enough for every benchmark's senders.
ORTHANC_DICOM_THREADS = 8


@contextmanager
def orthanc(work: Path, fork: bool) -> Iterator[tuple[str, int]]:
    del fork
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "vlnode-benchmark",
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SyncStorageArea": ORTHANC_SYNC_STORAGE_AREA,
        "StorageCompression": False,
        "DicomCheckCalledAet": False,
        "DicomThreadsCount": ORTHANC_DICOM_THREADS,
        "Plugins": [],
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config))
    log = work / "orthanc.log"
    process = start_receiver(["Orthanc", str(path)], log, env=DCMTK_ENV)
    try:
        wait_for_port("Orthanc", dicom_port, process, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=10) as rsp:
            json.load(rsp)
        yield "ORTHANC", dicom_port
    finally:
        stop(process)


VLNODE_LISTENER_PROCESSES = 2


def wait_for_listener_processes(
    port: int, processes: int, node: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    """Return once every listener process accepts associations.

    The extra processes import the node's modules (torch among them) after the main one
    listens: a connection handed to one meanwhile waits seconds for its A-ASSOCIATE-AC, which
    a timed round must not count. Associations held open at once land one per process.
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="WARMUP")
    ae.add_requested_context(Verification)
    ae.acse_timeout = timeout
    held = []
    try:
        for _ in range(processes):
            assoc = ae.associate("127.0.0.1", port, ae_title="VLNODE")
            if not assoc.is_established:
                raise RuntimeError(
                    f"vlnode serve gave no association within {timeout:g} s; its output:\n"
                    + _tail(log)
                )
            held.append(assoc)
        if node.poll() is not None:
            raise RuntimeError(f"vlnode serve exited with {node.returncode}:\n" + _tail(log))
    finally:
        for assoc in held:
            assoc.release()
        ae.shutdown()


@contextmanager
def vlnode(work: Path, fork: bool, spool_sync: str = "auto") -> Iterator[tuple[str, int]]:
    del fork
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLNODE_")}
    env.update(
        VLNODE_NODE__PORT=str(port),
        VLNODE_NODE__BIND_ADDRESS="127.0.0.1",
        VLNODE_NODE__LISTENER_PROCESSES=str(VLNODE_LISTENER_PROCESSES),
        VLNODE_STORE__SPOOL_SYNC=spool_sync,
        VLNODE_STORE__DATA_DIR=str(work / "vlnode-data"),
        VLNODE_LOGGING__LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    log = work / "vlnode.log"
    process = start_receiver([sys.executable, "-m", "vlnode.cli", "serve"], log, env=env, cwd=work)
    try:
        wait_for_port("vlnode serve", port, process, log)
        wait_for_listener_processes(port, VLNODE_LISTENER_PROCESSES, process, log)
        yield "VLNODE", port
    finally:
        stop(process)


Receiver = Callable[[Path, bool], AbstractContextManager[tuple[str, int]]]


def receivers(spool_sync: str) -> dict[str, Receiver]:
    return {
        "storescp": storescp,
        "orthanc": orthanc,
        "vlnode": functools.partial(vlnode, spool_sync=spool_sync),
    }


def send(files: list[Path], ae: str, port: int, associations: int) -> float:
    """Send ``files`` over ``associations`` concurrent storescu runs; return seconds."""
    groups = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aec", ae, "127.0.0.1", str(port), *map(str, group)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            raise RuntimeError(f"storescu to {ae} failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


def durability_floor(files: list[Path], work: Path, spool_sync: str) -> float:
    """vlnode's durable steps per file, no network: the same code as the C-STORE handler.

    Each file is written into the spool's incoming folder in 128 KB fragments, written back
    and sealed every 256 KiB and at the end (as the direct store does while it arrives), then
    stored: identifiers read, linked into place, made durable (syncfs on a sealed spool;
    fdatasync and folder fsync on a portable one), row committed.
    """
    from dicom_node.incoming import WRITEBACK_EVERY
    from dicom_node.receiver import AssociationTally, StoreService
    from dicom_node.spool import Spool
    from store.database import make_engine, upgrade_schema

    data_dir = work / "floor"
    engine = make_engine(f"sqlite:///{data_dir / 'vlnode.db'}")
    upgrade_schema(engine)
    service = StoreService(Spool(data_dir, 0, spool_sync), engine)
    tally = AssociationTally(None, "FLOOR")
    contents = [path.read_bytes() for path in files]
    syntax = str(read_file_meta_info(files[0]).TransferSyntaxUID)
    settle()
    start = time.perf_counter()
    for content in contents:
        incoming = service.spool.new_incoming_file()
        for offset in range(0, len(content), 131072):
            incoming.write(content[offset : offset + 131072])
            if incoming.unflushed >= WRITEBACK_EVERY or offset + 131072 >= len(content):
                incoming.flush()
        incoming.close()
        service.store(Path(incoming.name), syntax, "", "", tally)
    elapsed = time.perf_counter() - start
    if tally.stored != len(files):
        raise RuntimeError(f"floor run stored {tally.stored} of {len(files)} files")
    engine.dispose()
    shutil.rmtree(data_dir)
    return elapsed


def measure(
    files: list[Path], work: Path, rounds: int, associations: int, spool_sync: str
) -> dict[str, list[float]]:
    peers = receivers(spool_sync)
    times: dict[str, list[float]] = {name: [] for name in peers}
    for round_number in range(rounds):
        for name, receiver in peers.items():
            round_dir = work / f"{name}-{associations}-{round_number}"
            round_dir.mkdir()
            with receiver(round_dir, associations > 1) as (ae, port):
                settle()
                times[name].append(send(files, ae, port, associations))
            shutil.rmtree(round_dir)
    return times


def report(title: str, times: dict[str, list[float]], megabytes: float) -> None:
    print(f"\n{title}")
    rates = {}
    for name, values in times.items():
        median = statistics.median(values)
        rates[name] = megabytes / median
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:9s} median {median:6.2f} s  {rates[name]:7.1f} MB/s   (rounds: {spread} s)")
    print(f"ratio vlnode/orthanc: {rates['vlnode'] / rates['orthanc']:.2f}")
    print(f"ratio vlnode/storescp: {rates['vlnode'] / rates['storescp']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--spool-sync", choices=["auto", "sealed", "portable"], default="auto")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            print(
                f"{tool} not found: run scripts/setup.sh (Debian dcmtk and orthanc)",
                file=sys.stderr,
            )
            return 2
    with tempfile.TemporaryDirectory(prefix="vlnode-ingest-") as tmp:
        work = Path(tmp)
        _, files = write_ct_study(work / "series", (args.slices,), rows=512, columns=512)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        print(f"series: {len(files)} files, {megabytes:.1f} MB; rounds: {args.rounds}")
        print(f"orthanc SyncStorageArea: {str(ORTHANC_SYNC_STORAGE_AREA).lower()} (fsync per file)")
        print("all dcmtk processes run with TCP_NODELAY=1")
        print(f"vlnode: 2 listener processes, store.spool_sync = {args.spool_sync}")
        one = measure(files, work, args.rounds, 1, args.spool_sync)
        report("one association", one, megabytes)
        many = measure(files, work, args.rounds, args.associations, args.spool_sync)
        report(f"{args.associations} concurrent associations (aggregate)", many, megabytes)
        floors = [durability_floor(files, work, args.spool_sync) for _ in range(3)]
        print(f"\nfloor: {statistics.median(floors):.2f} s  (vlnode's durable steps, no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
