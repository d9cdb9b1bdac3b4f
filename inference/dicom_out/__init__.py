"""DICOM outputs a workstation can show: SR (TID 1500 or Basic Text) and SEG.

Public API: :func:`output_uid` (deterministic output UIDs), :func:`build_segmentation` and
:func:`read_segmentation` (SEG), :func:`load_structures` (label catalogues).
"""

from inference.dicom_out.seg import build_segmentation, read_segmentation
from inference.dicom_out.structures import CatalogueError, load_structures
from inference.dicom_out.uids import output_uid

__all__ = [
    "CatalogueError",
    "build_segmentation",
    "load_structures",
    "output_uid",
    "read_segmentation",
]
