"""Shared fixtures of the evaluation tests: tiny NIfTI folders and CSV files written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_nifti(
    path: Path, array: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 2.0)
) -> Path:
    """Write ``array`` as NIfTI with the given voxel spacing (mm)."""
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture
def image_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Image-to-image folders: good cases c0, c1; c2 missing; c3 wrong shape; c4 NaN;
    c5 wrong spacing; c6 an unreadable file; plus an extra prediction without reference."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    rng = np.random.default_rng(0)
    refs: dict[str, np.ndarray] = {}
    for i in range(7):
        r = rng.uniform(0, 100, size=(8, 8, 3)).astype(np.float32)
        refs[f"c{i}"] = r
        write_nifti(ref / f"c{i}.nii.gz", r)
    write_nifti(pred / "c0.nii.gz", refs["c0"] + 1.0)
    write_nifti(pred / "c1.nii", refs["c1"] + 2.0)
    write_nifti(pred / "c3.nii.gz", np.zeros((8, 8, 4), np.float32))
    bad = refs["c4"].copy()
    bad[0, 0, 0] = np.nan
    write_nifti(pred / "c4.nii.gz", bad)
    write_nifti(pred / "c5.nii.gz", refs["c5"], spacing=(1.0, 1.0, 3.0))
    (pred / "c6.nii.gz").write_bytes(b"this is not a nifti file")
    write_nifti(pred / "extra.nii.gz", refs["c0"])
    return ref, pred, refs


@pytest.fixture
def nifti_writer():
    """The :func:`write_nifti` helper, for tests that build their own folders."""
    return write_nifti
