"""The spool: where received instances are written, durably, exactly as they were sent.

Layout: ``<data_dir>/spool/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
each a DICOM Part 10 file (preamble, file meta, the data set bytes as received).

Durability (see DESIGN.md, "nothing lost"). A received instance arrives in a temporary file
in ``spool/.incoming`` (dicom_node.incoming) and takes its final name with a hard link rather
than a rename, because a link refuses to replace a file already there: the file system itself
says "this instance is stored already", and a duplicate never touches the stored bytes. It is
durable before its row is committed, in one of two orders:

* sealed (file systems with extended attributes, e.g. ext4, XFS): link, then ``syncfs``, one
  disk flush (shared by the instances stored at the same moment, dicom_node.group_commit);
  a file torn by a power loss before the flush is told by its seal (dicom_node.seal);
* portable: ``fdatasync`` the file, link, ``fsync`` the folder; a file under its final name is
  always complete.

Other files (quarantine reasons) are written to a temporary name in the final folder,
``fdatasync``ed, renamed and their folder fsynced. Temporary leftovers are removed at start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from dicom_node.errors import OutOfResourcesError, StorageError
from dicom_node.header import InstanceIdentifiers
from dicom_node.incoming import (
    INCOMING_FOLDER,
    IncomingFile,
    incoming_files,
    remove_incoming_leftovers,
)
from dicom_node.seal import can_seal, syncfs

TEMP_SUFFIX = ".partial"
# The free space is looked at once a second while it is this far above the floor, else per
# instance (Spool.check_free_space).
FREE_SPACE_HEADROOM = 512 * 2**20
FREE_SPACE_RECHECK_SECONDS = 1.0
INCOMING_FOLDERS = 32  # receiving threads' folders under .incoming (Spool.new_incoming_file)


class Spool:
    """Durable file writer for received instances and quarantined data.

    Parameters
    ----------
    data_dir
        The node's data directory; the spool and quarantine folders live under it.
    min_free_bytes
        New writes are refused with :class:`OutOfResourcesError` below this free space.
    sync
        ``store.spool_sync``: "auto", "sealed" or "portable" (see the module's text).
    """

    def __init__(self, data_dir: Path, min_free_bytes: int, sync: str = "auto") -> None:
        self.data_dir = data_dir
        self.root = data_dir / "spool"
        self.quarantine_root = data_dir / "quarantine"
        self.min_free_bytes = min_free_bytes
        self.incoming_dir = self.root / INCOMING_FOLDER
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(exist_ok=True)
        self.quarantine_root.mkdir(parents=True, exist_ok=True)
        # Received instances: one flush each where files can be sealed (dicom_node.seal),
        # else the portable two (fdatasync the file, fsync its folder).
        self.sealed = sync != "portable" and can_seal(self.incoming_dir)
        if sync == "sealed" and not self.sealed:
            raise StorageError(
                f"store.spool_sync is 'sealed' but the file system of {self.root} cannot keep "
                "extended attributes (or syncfs is missing): use 'auto' or 'portable'"
            )
        self._free_space_fine_until = 0.0
        self._thread_folder = threading.local()
        # Started at the process id: listener processes sharing the spool start apart.
        self._folder_numbers = itertools.count(os.getpid())
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()

    def relative_path(self, ids: InstanceIdentifiers) -> Path:
        """Path of an instance's file, relative to the data directory."""
        # One parse, not three joins (the UIDs were checked: digits and dots only).
        return Path(
            f"spool/{ids.study_instance_uid}/{ids.series_instance_uid}/{ids.sop_instance_uid}.dcm"
        )

    def check_free_space(self) -> None:
        """Raise :class:`OutOfResourcesError` when the spool's disk is under the floor."""
        if self.min_free_bytes <= 0:
            return
        now = time.monotonic()
        if now < self._free_space_fine_until:
            return
        free = shutil.disk_usage(self.root).free
        if free - self.min_free_bytes > FREE_SPACE_HEADROOM:
            # Far above the floor: no receiver writes that much in a second. Looked at per
            # instance, the free space cost a system call and 3% of the listener's CPU.
            self._free_space_fine_until = now + FREE_SPACE_RECHECK_SECONDS
        if free < self.min_free_bytes:
            raise OutOfResourcesError(
                f"free disk space {free // 2**20} MiB under the floor of "
                f"{self.min_free_bytes // 2**20} MiB (node.min_free_disk_mb); free space "
                f"under {self.root} or lower the floor"
            )

    def write(self, relative: Path, chunks: Iterable[bytes | memoryview]) -> int:
        """Write ``chunks`` durably to ``relative``; return the size in bytes.

        Raises
        ------
        StorageError
            Writing failed; no file is left under the final name by this call.
        """
        final = self.data_dir / relative
        self._ensure_dir(final.parent)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            with open(temp, "xb") as file:
                for chunk in chunks:
                    file.write(chunk)
            size = _datasync(temp)
        except OSError as exc:
            _remove_quietly(temp)
            raise StorageError(f"cannot write {relative}: {exc.strerror or exc}") from exc
        pending = PendingFile(temp, final, relative, size)
        pending.replace()
        _fsync_folder(pending)
        return size

    def new_incoming_file(self) -> IncomingFile:
        """A temporary file for an instance being received (see dicom_node.incoming), in the
        receiving thread's own folder under ``.incoming``.

        Creating and removing a file locks its folder: with every association's files in
        one folder, four processes creating, linking away and removing files spent 280-440
        us of CPU per file, against about 170 us with a folder each (the kernel spins on the
        folder's lock). A thread keeps its folder for its life (one association); folders
        are taken round-robin from a fixed set, so they do not pile up.
        """
        folder: Path | None = getattr(self._thread_folder, "path", None)
        if folder is None:
            folder = self.incoming_dir / f"{next(self._folder_numbers) % INCOMING_FOLDERS:02d}"
            folder.mkdir(exist_ok=True)
            self._thread_folder.path = folder
        return IncomingFile(folder)

    def files_being_received(self) -> list[Path]:
        """Incoming files: being received now, or left by receptions that never completed."""
        return incoming_files(self.incoming_dir)

    def pending_from_incoming(self, received: Path, relative: Path) -> PendingFile:
        """A completely received file, ready to take its final name and then be made durable
        with :meth:`make_durable`.

        Sealed spool: the file's flush is the syncfs after the link. Otherwise the file is
        ``fdatasync``ed here, and its folder is fsynced after the link.

        Raises
        ------
        StorageError
            The file cannot be made durable; it is removed.
        """
        final = self.data_dir / relative
        try:
            self._ensure_dir(final.parent)
            size = os.stat(received).st_size if self.sealed else _datasync(received)
        except OSError as exc:
            _remove_quietly(received)
            raise StorageError(f"cannot write {relative}: {exc.strerror or exc}") from exc
        return PendingFile(received, final, relative, size)

    def make_durable(self, folders: set[Path]) -> None:
        """Make the names of files placed in ``folders`` (from :meth:`pending_from_incoming`)
        durable, with their data: one syncfs on a sealed spool, else one fsync per folder.

        Raises
        ------
        StorageError
            The flush failed; none of those files may be acknowledged.
        """
        try:
            if self.sealed:
                syncfs(self.root)
            else:
                for folder in folders:
                    fsync_dir(folder)
        except OSError as exc:
            raise StorageError(
                f"cannot make received files durable in {self.root}: {exc.strerror or exc}"
            ) from exc

    def remove(self, relative: Path) -> None:
        """Remove a file this node placed but must not keep (it is recorded elsewhere)."""
        _remove_quietly(self.data_dir / relative)

    def quarantine(self, received: Path, reason: str, label: str) -> Path:
        """Move a received file that cannot be stored as an instance to the quarantine folder,
        with a ``.reason.txt`` beside it; return its path relative to the data directory."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        safe_label = "".join(c if c.isalnum() or c in ".-" else "_" for c in label)[:80]
        name = f"{stamp}-{uuid.uuid4().hex[:8]}-{safe_label or 'unknown'}.dcm"
        relative = Path("quarantine") / name
        try:
            _datasync(received)
        except OSError as exc:
            raise StorageError(f"cannot keep {received.name}: {exc.strerror or exc}") from exc
        pending = PendingFile(received, self.data_dir / relative, relative, 0)
        pending.replace()
        _fsync_folder(pending)
        reason_rel = relative.with_suffix(".reason.txt")
        self.write(reason_rel, [reason.encode("utf-8", "replace") + b"\n"])
        return relative

    def remove_partial_files(self) -> int:
        """Delete temporary files of writes that never completed (none was acknowledged)."""
        removed = remove_incoming_leftovers(self.incoming_dir)
        for root in (self.root, self.quarantine_root):
            for path in root.rglob(f".*{TEMP_SUFFIX}"):
                _remove_quietly(path)
                removed += 1
        return removed

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        with self._dirs_lock:
            created: list[Path] = []
            probe = folder
            while not probe.exists():
                created.append(probe)
                probe = probe.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
                # A new folder's entry must itself be durable in its parent.
                for new in reversed(created):
                    fsync_dir(new.parent)
            except OSError as exc:
                raise StorageError(f"cannot create folder {folder}: {exc.strerror}") from exc
            self._known_dirs.add(folder)


class PendingFile:
    """A complete temporary file waiting to take its final name.

    Taking the name does not make it durable: the spool's :meth:`Spool.make_durable` does, for
    a batch of files at a time (dicom_node.group_commit).
    """

    def __init__(self, temp: Path, final: Path, relative: Path, size: int) -> None:
        self.temp, self.final, self.relative, self.size = temp, final, relative, size

    def place(self) -> bool:
        """Take the final name unless a file has it already; True if this file took it.

        On False the temporary file is kept, for the caller to :meth:`discard` or
        :meth:`replace` with.
        """
        try:
            os.link(self.temp, self.final)
        except FileExistsError:
            return False
        except OSError as exc:
            _remove_quietly(self.temp)
            raise StorageError(f"cannot write {self.relative}: {exc.strerror or exc}") from exc
        _remove_quietly(self.temp)
        return True

    def replace(self) -> None:
        """Take the final name, replacing any file there."""
        try:
            os.rename(self.temp, self.final)
        except OSError as exc:
            _remove_quietly(self.temp)
            raise StorageError(f"cannot write {self.relative}: {exc.strerror or exc}") from exc

    def discard(self) -> None:
        _remove_quietly(self.temp)


def _fsync_folder(pending: PendingFile) -> None:
    """Make a placed, already fdatasynced file's name durable."""
    try:
        fsync_dir(pending.final.parent)
    except OSError as exc:
        raise StorageError(
            f"cannot make {pending.relative} durable: {exc.strerror or exc}"
        ) from exc


def _datasync(path: Path) -> int:
    """``fdatasync`` a written file (its data and size become durable); return its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (names created, renamed, removed) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
