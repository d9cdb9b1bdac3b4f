"""Fails loudly when a pynetdicom release changes what dicom_node.pynetdicom_tuning relies on."""

from __future__ import annotations

import inspect

import pynetdicom
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider

from dicom_node.pynetdicom_tuning import PINNED_VERSION, check_version


def test_pinned_version_is_installed() -> None:
    assert pynetdicom.__version__ == PINNED_VERSION
    check_version()


def test_reactor_still_polls_get_msg_without_blocking() -> None:
    # The tuning replaces the non-blocking poll; if the reactor stops using it, or the
    # provider stops keeping messages in ``msg_queue``, the tuning silently does nothing.
    source = inspect.getsource(Association._run_reactor)
    assert "self.dimse.get_msg(block=False)" in source
    assert "msg_queue" in inspect.getsource(DIMSEServiceProvider.get_msg)
    assert "self.msg_queue" in inspect.getsource(DIMSEServiceProvider.__init__)
