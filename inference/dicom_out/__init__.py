"""DICOM outputs a workstation can show: SR (TID 1500 or Basic Text) and SEG.

Public API:

* :func:`build_measurement_report` (Comprehensive 3D SR, TID 1500) and
  :func:`build_text_report` (Basic Text SR), with :class:`SegmentationReference` to link a SEG;
* :func:`build_segmentation` and :func:`read_segmentation` (SEG);
* :func:`output_uid` (deterministic output UIDs) and :func:`load_structures` (label
  catalogues, :class:`CatalogueError`).

Every encoder refuses bad input with a ``ValueError`` naming what is wrong.
"""

from inference.dicom_out.seg import build_segmentation, read_segmentation
from inference.dicom_out.sr import SegmentationReference, build_measurement_report
from inference.dicom_out.structures import CatalogueError, load_structures
from inference.dicom_out.text_sr import build_text_report
from inference.dicom_out.uids import output_uid

__all__ = [
    "CatalogueError",
    "SegmentationReference",
    "build_measurement_report",
    "build_segmentation",
    "build_text_report",
    "load_structures",
    "output_uid",
    "read_segmentation",
]
