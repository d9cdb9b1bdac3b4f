"""Put DICOM files into a node's spool and store as the listener would (for worker tests)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path

import pydicom
from sqlalchemy import Engine

from store.instances import InstanceIndex
from store.records import ReceivedInstance


def receive_files(
    engine: Engine, data_dir: Path, files: Sequence[Path], calling_ae: str = "PACS"
) -> str:
    """Copy ``files`` under ``data_dir/spool`` and record them; return the last Study UID."""
    index = InstanceIndex(engine)
    study = ""
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study = str(ds.StudyInstanceUID)
        relative = Path("spool") / study / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, data_dir / relative)
        index.record(
            ReceivedInstance(
                study,
                str(ds.SeriesInstanceUID),
                str(ds.SOPInstanceUID),
                str(ds.SOPClassUID),
                str(ds.file_meta.TransferSyntaxUID),
                str(ds.Modality),
                str(relative),
                path.stat().st_size,
                dt.datetime.now(dt.UTC),
                calling_ae,
                None,
            )
        )
    index.close()
    return study
