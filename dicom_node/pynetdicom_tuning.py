"""The one place vlnode reaches into pynetdicom's internals, pinned to one version.

pynetdicom's association reactor polls for a decoded DIMSE message with
``self.dimse.get_msg(block=False)`` after a 1 ms sleep on every turn, so each C-STORE waits
up to a millisecond before its handler runs; profiling a 300-instance series put about 30%
of the receiving thread's time in that sleep. We give each acceptor's DIMSE provider a
``get_msg`` that, asked not to block, waits briefly on the message queue instead: a message
is served the moment it is complete, and release/abort checks still run every few ms.

pynetdicom is pinned exactly (pyproject.toml); ``tests/dicom_node/test_pynetdicom_tuning.py``
fails loudly if a new version changes what this relies on.
"""

from __future__ import annotations

import queue
from typing import Any

import pynetdicom

PINNED_VERSION = "3.0.4"
# Long enough to sleep through idle time cheaply, short enough that a release or abort
# (which arrive on another queue) is noticed promptly.
_WAIT_SECONDS = 0.005


class PynetdicomVersionError(RuntimeError):
    """pynetdicom is not the version this module was written against."""


def check_version() -> None:
    if pynetdicom.__version__ != PINNED_VERSION:
        raise PynetdicomVersionError(
            f"dicom_node.pynetdicom_tuning was written for pynetdicom {PINNED_VERSION}, "
            f"found {pynetdicom.__version__}: re-check it and update the pin"
        )


def make_reactor_event_driven(assoc: Any) -> None:
    """Replace ``assoc.dimse.get_msg`` with a version that waits on the queue (see above)."""
    dimse = assoc.dimse
    messages: queue.Queue[Any] = dimse.msg_queue
    blocking_get = dimse.get_msg

    def get_msg(block: bool = False) -> tuple[int | None, Any]:
        if block:
            return blocking_get(block=True)  # type: ignore[no-any-return]
        try:
            return messages.get(timeout=_WAIT_SECONDS)  # type: ignore[no-any-return]
        except queue.Empty:
            return None, None

    dimse.get_msg = get_msg
