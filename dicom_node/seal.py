"""One disk flush per received instance (or batch of them), and a seal that tells a complete
file from a torn one.

Making a new file durable under a new name takes two flushes if done in the portable order
(``fdatasync`` the file, rename, ``fsync`` the folder): on the disk of the development machine
each flush costs 3-4 ms, more than the rest of the instance's path. The sealed order takes one:

1. while the data set arrives, a CRC-32 of the file's bytes is kept and written, with the
   size, into an extended attribute of the file (``user.vlnode.seal``);
2. the file is linked under its final name;
3. ``syncfs`` writes out everything pending on the spool's file system (the file's data and
   attribute, the name) and flushes the disk once; then the success status is sent.

After a power loss before step 3 completed, a file may sit under its final name with part of
its data (it was never acknowledged, and the sender will send it again). Such a file has no row,
and the start after an unclean stop checks the seal of every file without a row: a file whose
bytes match their seal is complete (its row was lost, see dicom_node.recovery); one that does
not is moved to quarantine.

Where the file system cannot keep extended attributes, the spool uses the portable order.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import zlib
from collections.abc import Callable
from pathlib import Path

SEAL_ATTRIBUTE = "user.vlnode.seal"


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def syncfs(folder: Path) -> None:
    """Write out and flush everything pending on ``folder``'s file system (syncfs(2))."""
    if _syncfs is None:
        raise OSError("syncfs is not available on this system")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


def can_seal(folder: Path) -> bool:
    """True if files in ``folder`` can carry a seal and the file system can be synced whole."""
    if _syncfs is None or not hasattr(os, "setxattr"):
        return False
    probe = folder / ".seal-probe"
    try:
        probe.write_bytes(b"")
        os.setxattr(probe, SEAL_ATTRIBUTE, b"0:00000000")
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


class Sealer:
    """Keeps the running size and CRC-32 of a file being written, and writes its seal."""

    def __init__(self) -> None:
        self.size = 0
        self.crc = 0
        self.enabled = True

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def write(self, fd: int) -> None:
        if not self.enabled:
            return
        try:
            os.setxattr(fd, SEAL_ATTRIBUTE, _seal_value(self.size, self.crc))
        except OSError:
            self.enabled = False  # no extended attributes here: the spool syncs portably


def has_seal(path: Path) -> bool:
    try:
        os.getxattr(path, SEAL_ATTRIBUTE)
    except OSError:
        return False
    return True


def is_sealed_and_intact(path: Path) -> bool:
    """True if the file's bytes match the seal written while it was received."""
    try:
        seal = os.getxattr(path, SEAL_ATTRIBUTE)
    except OSError:
        return False
    crc, size = 0, 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return seal == _seal_value(size, crc)


def _seal_value(size: int, crc: int) -> bytes:
    return f"{size}:{crc:08x}".encode()
