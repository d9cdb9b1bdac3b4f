"""Group commit: concurrent instances share flushes and transactions, and fail alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from dicom_node.errors import StorageError
from dicom_node.group_commit import GroupCommit
from store.records import ReceivedInstance
from store.tables import utcnow


def item(uid: str) -> ReceivedInstance:
    return ReceivedInstance(
        study_instance_uid="1.2",
        series_instance_uid="1.2.1",
        sop_instance_uid=uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        file_path=f"spool/1.2/1.2.1/{uid}.dcm",
        size_bytes=1,
        received_at=utcnow(),
        calling_ae_title="SCU",
        association_id=None,
    )


class Recorder:
    """Stands in for the spool's flush and the store: logs calls, can be held or fail."""

    def __init__(self) -> None:
        self.flushes: list[set[Path]] = []
        self.batches: list[list[str]] = []
        self.seen: set[str] = set()
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.bad_uid: str | None = None
        self.flush_fails = False

    def flush(self, folders: set[Path]) -> None:
        self.entered.set()
        self.hold.wait(10)
        if self.flush_fails:
            raise StorageError("cannot make received files durable: disk gone")
        self.flushes.append(folders)

    def record(self, items: Sequence[ReceivedInstance]) -> list[bool]:
        uids = [i.sop_instance_uid for i in items]
        self.batches.append(uids)
        if self.bad_uid in uids:
            raise ValueError(f"row {self.bad_uid} rejected")
        outcome = [uid not in self.seen for uid in uids]
        self.seen.update(uids)
        return outcome


def commit_in_threads(group: GroupCommit, uids: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}

    def one(uid: str) -> None:
        try:
            results[uid] = group.commit(item(uid), Path(f"/spool/{uid[-1]}"))
        except StorageError as exc:
            results[uid] = exc

    threads = [threading.Thread(target=one, args=(uid,)) for uid in uids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_a_lone_instance_is_flushed_then_recorded() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush, recorder.record)
    assert group.commit(item("1.2.1.1"), Path("/spool/a")) is True
    assert group.commit(item("1.2.1.1"), Path("/spool/a")) is False  # recorded already
    assert recorder.flushes == [{Path("/spool/a")}, {Path("/spool/a")}]
    assert recorder.batches == [["1.2.1.1"], ["1.2.1.1"]]


def test_instances_arriving_during_a_flush_share_the_next_one() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush, recorder.record)
    recorder.hold.clear()
    first = threading.Thread(target=group.commit, args=(item("1.2.1.0"), Path("/spool/0")))
    first.start()
    assert recorder.entered.wait(10)  # the first leads, and is held in its flush
    waiting = [f"1.2.1.{n}" for n in range(1, 6)]
    threads_done: dict[str, object] = {}
    runner = threading.Thread(target=lambda: threads_done.update(commit_in_threads(group, waiting)))
    runner.start()
    while len(group._queue) < len(waiting):  # all five queued behind the leader
        threading.Event().wait(0.01)
    recorder.hold.set()
    first.join(10)
    runner.join(10)
    assert threads_done == dict.fromkeys(waiting, True)
    # One flush and one transaction for the first, one of each for the five.
    assert len(recorder.flushes) == 2 and len(recorder.batches) == 2
    assert sorted(recorder.batches[1]) == waiting
    assert recorder.flushes[1] == {Path(f"/spool/{n}") for n in range(1, 6)}
    assert (group.batches, group.instances) == (2, 6)


def test_a_rejected_row_fails_only_its_own_instance() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush, recorder.record)
    recorder.bad_uid = "1.2.1.3"
    recorder.hold.clear()
    leader = threading.Thread(target=group.commit, args=(item("1.2.1.0"), Path("/spool/0")))
    leader.start()
    assert recorder.entered.wait(10)
    results: dict[str, object] = {}
    uids = ["1.2.1.1", "1.2.1.2", "1.2.1.3"]
    runner = threading.Thread(target=lambda: results.update(commit_in_threads(group, uids)))
    runner.start()
    while len(group._queue) < len(uids):
        threading.Event().wait(0.01)
    recorder.hold.set()
    leader.join(10)
    runner.join(10)
    assert results["1.2.1.1"] is True and results["1.2.1.2"] is True
    error = results["1.2.1.3"]
    assert isinstance(error, StorageError)
    assert "cannot record the instance in the store" in str(error)
    assert "1.2.1.3 rejected" in str(error)
    assert "1.2.1.3" not in recorder.seen


def test_a_failed_flush_fails_every_instance_of_its_batch_and_records_none() -> None:
    recorder = Recorder()
    recorder.flush_fails = True
    group = GroupCommit(recorder.flush, recorder.record)
    results = commit_in_threads(group, ["1.2.1.1", "1.2.1.2", "1.2.1.3"])
    assert all(isinstance(r, StorageError) for r in results.values())
    assert recorder.batches == []
    # The next batch is served again once the disk is back.
    recorder.flush_fails = False
    assert group.commit(item("1.2.1.4"), Path("/spool/4")) is True


def test_an_unexpected_recording_error_of_a_lone_instance_is_a_storage_error() -> None:
    recorder = Recorder()
    recorder.bad_uid = "1.2.1.9"
    group = GroupCommit(recorder.flush, recorder.record)
    with pytest.raises(StorageError, match="cannot record"):
        group.commit(item("1.2.1.9"), Path("/spool/9"))
