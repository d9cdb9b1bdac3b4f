"""Hostile input: thousands of malformed streams and PDUs against one running node.

Each example opens a raw TCP connection and sends what hypothesis builds: garbage before an
association, lying PDU lengths, unexpected PDUs, nonsense PDV items, and well-formed C-STORE
requests whose data sets are truncated, carry bad VRs or huge element lengths, or are in
another transfer syntax than their presentation context. The node must answer every one
with an A-ABORT, an A-ASSOCIATE-RJ or a failure status (a stream we cut short may simply be
closed), never a success for a malformed data set. Afterwards it must still be running,
hold no more open descriptors than before, have stored nothing, and still store a good
instance. One node serves all examples, so a leak adds up where it can be seen.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from dicom_node.incoming import incoming_files
from store.database import make_engine
from store.tables import Instance
from tests.conftest import NodeProcess, free_port, node_env
from tests.dicom_factory import ct_slice
from tests.dicom_node import raw_dicom as raw

# Four batches of examples; together more than 2,000 streams and PDUs.
EXAMPLES = {"before": 500, "pdus": 600, "data_sets": 800, "fragments": 200}
FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,  # the same streams in every run: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NETWORK_TIMEOUT = "2"
STUDY = "1.2.826.0.1.3680043.8.498.77"
_serial = itertools.count(1)


def next_sop_uid() -> str:
    # Always as long: hypothesis needs each example's bounds to repeat when it replays one.
    return f"{STUDY}.1{next(_serial):08d}"


@dataclass
class FuzzedNode:
    node: NodeProcess
    fds_at_start: int
    successes: int = 0

    @property
    def pid(self) -> int:
        assert self.node.process is not None
        return self.node.process.pid

    def descriptors(self) -> list[str]:
        """What the node's open descriptors point to."""
        targets = []
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                targets.append(os.readlink(f"/proc/{self.pid}/fd/{fd}"))
        return targets

    def open_descriptors(self) -> int:
        """Open descriptors besides the SQLite files, which its connection pool keeps open
        (one per pooled connection, bounded by the pool; checked apart)."""
        return sum(1 for target in self.descriptors() if not _is_database(target))

    def alive(self) -> bool:
        assert self.node.process is not None
        return self.node.process.poll() is None


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedNode]:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to count the node's open descriptors")
    folder = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    data_dir = folder / "vlnode-data"
    env = node_env(
        port,
        data_dir,
        NODE__NETWORK_TIMEOUT=NETWORK_TIMEOUT,
        NODE__MAX_ASSOCIATIONS="200",
        STUDY__STABLE_SECONDS="3600",  # no jobs: the node only receives here
    )
    node = NodeProcess(port, data_dir, env, log_path=folder / "node.log")
    node.start()
    time.sleep(1.0)  # the worker and sender threads open what they keep open
    state = FuzzedNode(node, 0)
    state.fds_at_start = state.open_descriptors()
    yield state
    if node.process is not None and node.process.poll() is None:
        node.process.kill()
        node.process.wait(timeout=10)


@dataclass(frozen=True)
class Case:
    """One hostile conversation: the bytes, whether we then end our side, and what to expect."""

    stream: bytes
    half_close: bool = False
    # Sent once the association is accepted (``stream`` is then a valid A-ASSOCIATE-RQ).
    after_accept: bytes = b""
    # The stream carries one complete C-STORE request with a malformed data set.
    malformed_store: bool = False
    sop_instance_uid: str = ""


def valid_association(syntaxes: tuple[str, ...] = (raw.IMPLICIT_LE, raw.EXPLICIT_LE)) -> bytes:
    return raw.pdu(raw.A_ASSOCIATE_RQ, raw.associate_rq_body(syntaxes=syntaxes))


def play(fuzzed: FuzzedNode, case: Case) -> raw.Answer:
    assert fuzzed.alive(), fuzzed.node.log()[-3000:]
    answer = raw.converse(
        fuzzed.node.port,
        case.stream,
        case.half_close,
        1 if case.malformed_store else 0,
        case.after_accept,
    )
    if raw.SUCCESS in answer.statuses:
        fuzzed.successes += 1
    if case.after_accept:
        assert answer.pdu_types[:1] == (raw.A_ASSOCIATE_AC,), answer
    if case.malformed_store:
        assert raw.SUCCESS not in answer.statuses, (answer, case)
    if case.half_close:
        # Our stream ended early: an abort, a failure or the node closing are all answers.
        assert answer.refused or answer.failed_store or answer.closed_by_node, answer
    else:
        assert answer.refused or answer.failed_store, (answer, case)
    return answer


# -- before an association ------------------------------------------------------------------


@st.composite
def before_association(draw: st.DrawFn) -> Case:
    body = raw.associate_rq_body()
    kind = draw(
        st.sampled_from(
            ["unknown type", "truncated", "short length", "huge length", "version", "garbage"]
        )
    )
    if kind == "unknown type":
        pdu_type = draw(st.sampled_from([0x00, *range(0x08, 0x100)]))
        tail = draw(st.binary(max_size=200))
        return Case(raw.pdu(pdu_type, tail, draw(st.integers(0, 2**32 - 1))), half_close=True)
    if kind == "truncated":
        cut = draw(st.integers(0, len(body) + 5))
        return Case(raw.pdu(raw.A_ASSOCIATE_RQ, body)[:cut], half_close=True)
    if kind == "short length":
        # A length that ends the PDU inside its items: the rest reads as the next PDU.
        declared = draw(st.integers(0, len(body) - 1))
        return Case(raw.pdu(raw.A_ASSOCIATE_RQ, body, declared), half_close=True)
    if kind == "huge length":
        declared = draw(st.integers(2**24, 2**32 - 1))
        return Case(raw.pdu(raw.A_ASSOCIATE_RQ, body, declared), half_close=True)
    if kind == "version":
        version = draw(st.integers(0, 0xFFFF).filter(lambda v: v & 1 == 0))
        return Case(raw.pdu(raw.A_ASSOCIATE_RQ, raw.associate_rq_body(version=version)))
    garbage = draw(st.binary(min_size=1, max_size=300))
    return Case(garbage, half_close=True)


@pytest.mark.peer
@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES["before"])
@given(case=before_association())
def test_garbage_before_an_association(fuzzed: FuzzedNode, case: Case) -> None:
    answer = play(fuzzed, case)
    assert raw.P_DATA_TF not in answer.pdu_types


# -- PDUs after an association --------------------------------------------------------------


@st.composite
def pdus_after_association(draw: st.DrawFn) -> Case:
    start = valid_association()
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "unexpected pdu",
                "huge p-data",
                "pdv overruns",
                "pdv too short",
                "unknown context",
                "data before command",
                "garbage command",
                "truncated p-data",
            ]
        )
    )
    half_close = False
    if kind == "garbage":
        first = draw(st.sampled_from([0x00, *range(0x08, 0x100)]))
        rest = bytes([first]) + draw(st.binary(min_size=5, max_size=200))
    elif kind == "unexpected pdu":
        pdu_type = draw(st.sampled_from([raw.A_ASSOCIATE_RQ, raw.A_ASSOCIATE_AC, 0x03, 0x06]))
        rest = raw.pdu(pdu_type, draw(st.binary(max_size=100)))
    elif kind == "huge p-data":
        declared = draw(st.integers(2**24, 2**32 - 1))
        rest = raw.pdu(raw.P_DATA_TF, raw.pdv(1, 0x03, b"\0" * 16), declared)
        half_close = True
    elif kind == "pdv overruns":
        item = raw.pdv(1, 0x03, raw.c_store_rq(next_sop_uid()))
        declared = draw(st.integers(len(item) - 3, 2**32 - 1))
        rest = raw.pdu(raw.P_DATA_TF, struct.pack(">I", declared) + item[4:])
    elif kind == "pdv too short":
        rest = raw.pdu(raw.P_DATA_TF, raw.pdv(1, 0x03, b"", draw(st.integers(0, 1))))
    elif kind == "unknown context":
        context = draw(st.sampled_from([0, 2, 4, 5, 7, 99, 255]))
        rest = raw.pdu(raw.P_DATA_TF, raw.pdv(context, 0x03, raw.c_store_rq(next_sop_uid())))
    elif kind == "data before command":
        rest = raw.pdu(raw.P_DATA_TF, raw.pdv(1, 0x02, draw(st.binary(min_size=1, max_size=64))))
    elif kind == "garbage command":
        rest = raw.pdu(raw.P_DATA_TF, raw.pdv(1, 0x03, draw(st.binary(min_size=1, max_size=64))))
    else:
        item = raw.pdu(raw.P_DATA_TF, raw.pdv(1, 0x03, raw.c_store_rq(next_sop_uid())))
        rest = item[: draw(st.integers(1, len(item) - 1))]
        half_close = True
    return Case(start, half_close=half_close, after_accept=rest)


@pytest.mark.peer
@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES["pdus"])
@given(case=pdus_after_association())
def test_nonsense_pdus_after_an_association(fuzzed: FuzzedNode, case: Case) -> None:
    play(fuzzed, case)


# -- C-STORE requests with malformed data sets ----------------------------------------------


def good_data_set(sop_instance_uid: str) -> object:
    ds = ct_slice(STUDY, STUDY + ".0", 0, rows=8, columns=8)
    del ds.file_meta
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def element_spans(encoded: bytes, implicit: bool) -> list[tuple[int, int, int]]:
    """(start, header length, value length) of each top-level element (no sequences here)."""
    spans, offset = [], 0
    while offset < len(encoded):
        if implicit:
            header, length = 8, struct.unpack_from("<I", encoded, offset + 4)[0]
        elif encoded[offset + 4 : offset + 6] in (b"OB", b"OW", b"UN", b"UT", b"SQ"):
            header, length = 12, struct.unpack_from("<I", encoded, offset + 8)[0]
        else:
            header, length = 8, struct.unpack_from("<H", encoded, offset + 6)[0]
        spans.append((offset, header, length))
        offset += header + length
    return spans


def _without(ds: object, keyword: str) -> object:
    delattr(ds, keyword)
    return ds


@st.composite
def malformed_stores(draw: st.DrawFn) -> Case:
    sop = next_sop_uid()
    syntax = draw(st.sampled_from([raw.IMPLICIT_LE, raw.EXPLICIT_LE]))
    implicit = syntax == raw.IMPLICIT_LE
    encoded = raw.encode_data_set(good_data_set(sop), syntax)  # type: ignore[arg-type]
    spans = element_spans(encoded, implicit)
    kind = draw(
        st.sampled_from(
            [
                "truncated",
                "bad vr",
                "huge length",
                "wrong syntax",
                "not deflated",
                "no study",
                "bad uid",
                "other instance",
                "garbage",
            ]
        )
    )
    context_syntax = syntax
    if kind == "truncated":
        boundaries = {start for start, _, _ in spans} | {len(encoded)}
        cut = draw(st.integers(1, len(encoded) - 1).filter(lambda c: c not in boundaries))
        data = encoded[:cut]
    elif kind == "bad vr":
        context_syntax = raw.EXPLICIT_LE
        encoded = raw.encode_data_set(good_data_set(sop), raw.EXPLICIT_LE)  # type: ignore[arg-type]
        start, _, _ = draw(st.sampled_from(element_spans(encoded, False)))
        vr = draw(
            st.one_of(
                st.binary(min_size=2, max_size=2).filter(lambda v: not v.isalpha()),
                st.sampled_from([b"ZZ", b"XX", b"QQ", b"ui", b"Ob", b"AA"]),
            )
        )
        data = encoded[: start + 4] + vr + encoded[start + 6 :]
    elif kind == "huge length":
        start, header, _ = draw(st.sampled_from(spans))
        size = 4 if header == 12 or implicit else 2
        at = start + header - size
        remaining = len(encoded) - (start + header)
        declared = draw(st.integers(remaining + 1, 2 ** (8 * size) - 2))
        data = encoded[:at] + declared.to_bytes(size, "little") + encoded[at + size :]
    elif kind == "wrong syntax":
        context_syntax = raw.EXPLICIT_LE if implicit else raw.IMPLICIT_LE
        data = encoded
    elif kind == "not deflated":
        context_syntax = raw.DEFLATED_LE
        data = raw.encode_data_set(good_data_set(sop), raw.EXPLICIT_LE)  # type: ignore[arg-type]
    elif kind == "no study":
        ds = _without(
            good_data_set(sop), draw(st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID"]))
        )
        data = raw.encode_data_set(ds, syntax)  # type: ignore[arg-type]
    elif kind == "bad uid":
        ds = good_data_set(sop)
        value = draw(st.sampled_from(["1.2.x.4", "1..2", "1.2.3." + "9" * 70, ".1.2", "1.2/../3"]))
        ds.StudyInstanceUID = value  # type: ignore[attr-defined]
        data = raw.encode_data_set(ds, syntax)  # type: ignore[arg-type]
    elif kind == "other instance":
        data = raw.encode_data_set(good_data_set(sop + ".9"), syntax)  # type: ignore[arg-type]
    else:
        data = draw(st.binary(min_size=0, max_size=400))
    return _store_case(sop, context_syntax, data, draw(st.integers(1, 4)))


def _store_case(sop: str, syntax: str, data: bytes, fragments: int) -> Case:
    contexts = (raw.IMPLICIT_LE, raw.EXPLICIT_LE, raw.DEFLATED_LE)
    context_id = 2 * contexts.index(syntax) + 1
    command = raw.pdu(raw.P_DATA_TF, raw.pdv(context_id, 0x03, raw.c_store_rq(sop)))
    size = max(1, -(-len(data) // fragments))
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    stream = command
    for index, piece in enumerate(pieces):
        control = 0x02 if index == len(pieces) - 1 else 0x00
        stream += raw.pdu(raw.P_DATA_TF, raw.pdv(context_id, control, piece))
    return Case(
        valid_association(contexts),
        after_accept=stream,
        malformed_store=True,
        sop_instance_uid=sop,
    )


@pytest.mark.peer
@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES["data_sets"])
@given(case=malformed_stores())
def test_malformed_data_sets_get_a_failure_status(fuzzed: FuzzedNode, case: Case) -> None:
    answer = play(fuzzed, case)
    assert answer.failed_store or answer.refused, answer


@st.composite
def cut_off_stores(draw: st.DrawFn) -> Case:
    """A good C-STORE whose stream stops somewhere in its data set; we then close."""
    sop = next_sop_uid()
    data = raw.encode_data_set(good_data_set(sop), raw.EXPLICIT_LE)  # type: ignore[arg-type]
    case = _store_case(sop, raw.EXPLICIT_LE, data, draw(st.integers(1, 4)))
    cut = draw(st.integers(1, len(case.after_accept) - 1))
    return Case(
        case.stream, half_close=True, after_accept=case.after_accept[:cut], sop_instance_uid=sop
    )


@pytest.mark.peer
@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES["fragments"])
@given(case=cut_off_stores())
def test_stores_cut_off_mid_stream_leave_nothing(fuzzed: FuzzedNode, case: Case) -> None:
    answer = play(fuzzed, case)
    assert raw.SUCCESS not in answer.statuses


# -- afterwards -----------------------------------------------------------------------------


def _eventually(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.peer
@pytest.mark.slow
def test_node_survives_stores_nothing_and_leaks_nothing(fuzzed: FuzzedNode) -> None:
    assert fuzzed.alive(), fuzzed.node.log()[-3000:]
    assert fuzzed.successes == 0
    # Associations the node is still winding down close within the network timeout.
    assert _eventually(lambda: fuzzed.open_descriptors() <= fuzzed.fds_at_start), (
        f"{fuzzed.open_descriptors()} descriptors open, {fuzzed.fds_at_start} at start: "
        + ", ".join(sorted(fuzzed.descriptors()))
    )
    database = [target for target in fuzzed.descriptors() if target.endswith("vlnode.db")]
    assert len(database) <= _POOLED_CONNECTIONS, database
    data_dir = fuzzed.node.data_dir
    assert not list((data_dir / "spool").rglob("*.dcm"))
    assert not incoming_files(data_dir / "spool" / ".incoming")
    engine = make_engine(f"sqlite:///{data_dir / 'vlnode.db'}")
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Instance)) == 0
        # Still serving: a good instance is stored, once.
        sop = next_sop_uid()
        data = raw.encode_data_set(good_data_set(sop), raw.EXPLICIT_LE)  # type: ignore[arg-type]
        good = _store_case(sop, raw.EXPLICIT_LE, data, 2)
        answer = raw.converse(fuzzed.node.port, good.stream, False, 1, good.after_accept)
        assert answer.statuses == (raw.SUCCESS,), answer
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Instance)) == 1
    finally:
        engine.dispose()
    assert fuzzed.node.stop() == 0


def _is_database(target: str) -> bool:
    return target.endswith(("vlnode.db", "vlnode.db-wal", "vlnode.db-shm"))


# SQLAlchemy's default pool: 5 connections and 10 more under load.
_POOLED_CONNECTIONS = 15
