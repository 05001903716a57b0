"""Our DICOM -> NIfTI conversion against dcm2niix, voxel by voxel in world space.

dcm2niix flips the row axis of a DICOM frame (its j runs the other way) and stores
raw values with scl_slope / scl_inter; comparing at equal world coordinates makes the
check independent of such storage choices.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from imaging_helpers import Series, rotation, write_series

from medarena.imaging import read_dicom_series, read_nifti, write_nifti


def _dcm2niix(src: Path, out: Path) -> nib.Nifti1Image:
    if shutil.which("dcm2niix") is None:
        pytest.fail("dcm2niix is not installed: apt-get install dcm2niix (scripts/install --test)")
    out.mkdir()
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [path] = list(out.glob("*.nii"))
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


@pytest.mark.interop
@pytest.mark.parametrize("angle", [0.0, 25.0])
def test_same_values_at_same_world_points(tmp_path: Path, angle: float) -> None:
    s: Series = write_series(
        tmp_path / "dicom", n=5, spacing=2.0, rot=rotation(np.array([1.0, 2.0, 0.5]), angle)
    )
    ref = _dcm2niix(s.files[0].parent, tmp_path / "d2n")
    ours = read_nifti(write_nifti(read_dicom_series(s.files), tmp_path / "ours.nii.gz"))
    ref_data = np.asanyarray(ref.dataobj)
    assert ref_data.shape == ours.array.shape
    # Every dcm2niix voxel centre, mapped to our voxel grid, lands on a whole index.
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in ref_data.shape], indexing="ij"), -1)
    ijk = ijk.reshape(-1, 3)
    ras = ijk @ ref.affine[:3, :3].T + ref.affine[:3, 3]
    ours_ijk = (ras - ours.nifti_affine()[:3, 3]) @ np.linalg.inv(ours.nifti_affine()[:3, :3]).T
    # 1e-3 voxel of 0.66 mm: the affines agree to well under 1e-3 mm.
    np.testing.assert_allclose(ours_ijk, np.round(ours_ijk), atol=1e-3)
    idx = np.round(ours_ijk).astype(int)
    np.testing.assert_allclose(
        ours.array[idx[:, 0], idx[:, 1], idx[:, 2]], ref_data.reshape(-1), atol=1e-4
    )
    # The header says scanner-based qform and sform, as dcm2niix's does.
    hdr = nib.load(tmp_path / "ours.nii.gz").header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    assert int(ref.header["sform_code"]) == 1
