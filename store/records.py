"""Typed hand-offs into and out of the store (frozen dataclasses, no ORM objects leak out)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class ReceivedInstance:
    """One instance that is on disk in the spool and about to be recorded."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    file_path: str  # relative to the data directory
    size_bytes: int
    received_at: dt.datetime
    calling_ae_title: str
    association_id: int | None


@dataclass(frozen=True)
class AssociationRequest:
    """Who asked to associate, and what we decided."""

    calling_ae_title: str
    called_ae_title: str
    peer_host: str
    peer_port: int
    accepted: bool
    reason: str | None


@dataclass(frozen=True)
class StudyReady:
    """A study went quiet and a job was queued for it."""

    study_instance_uid: str
    job_id: int
    instances: int
