"""Fixtures of the DICOM output tests: the repaired example CT, its volume and label map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from inference.dicom_out.structures import load_structures
from inference.results import AlgorithmIdentity, LabelMap
from inference.volume import Volume3D, rebuild_series
from tests.conftest import REPO
from tests.ct_example import REFERENCE_LABELS, repaired_example_ct

CATALOGUE = REPO / "conf" / "segmentation" / "totalsegmentator-v2.toml"
TOTALSEG = AlgorithmIdentity(
    name="TotalSegmentator", version="2.4.0", content_hash="ab" * 32, task="segmentation"
)


@dataclass(frozen=True)
class ExampleCT:
    files: list[Path]
    headers: list[pydicom.Dataset]
    volume: Volume3D
    reference: npt.NDArray[np.integer]  # example_seg_dicom.nii.gz on the volume's grid
    label_map: LabelMap


def labels_on_volume(nifti: Path, volume: Volume3D) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour labels of a NIfTI (RAS) at each voxel centre of ``volume`` (LPS)."""
    image = nib.load(nifti)
    assert isinstance(image, nib.Nifti1Image)
    data = np.asarray(image.dataobj)
    indices = np.indices(volume.array.shape[:3]).reshape(3, -1).T
    ras = volume.voxel_to_world(indices) * np.array([-1.0, -1.0, 1.0])
    ijk = np.c_[ras, np.ones(len(ras))] @ np.linalg.inv(image.affine).T
    nearest = np.rint(ijk[:, :3]).astype(np.int64)
    inside = np.all((nearest >= 0) & (nearest < np.array(data.shape[:3])), axis=1)
    out = np.zeros(len(nearest), dtype=np.uint8)
    out[inside] = data[tuple(nearest[inside].T)]
    return out.reshape(volume.array.shape[:3])


@pytest.fixture(scope="session")
def example_ct(tmp_path_factory: pytest.TempPathFactory) -> ExampleCT:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "ct-totalsegmentator").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see shared/data/README.md)")
    files = repaired_example_ct(tmp_path_factory.mktemp("example-ct"), SHARED_DATA)
    volume = rebuild_series(files, workers=1)
    assert isinstance(volume, Volume3D)
    reference = labels_on_volume(SHARED_DATA / REFERENCE_LABELS, volume)
    structures = tuple(load_structures(CATALOGUE).values())
    return ExampleCT(
        files=files,
        headers=[pydicom.dcmread(f, stop_before_pixels=True) for f in files],
        volume=volume,
        reference=reference,
        label_map=LabelMap(reference, volume, structures, TOTALSEG),
    )
