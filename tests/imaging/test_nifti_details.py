"""NIfTI details: dtypes, scaling, byte order, 4D, suffixless objects, foreign files."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from imaging_helpers import rotation

from medarena.errors import InputError
from medarena.imaging import Image, read_image, read_nifti, write_nifti


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32])
def test_label_dtypes_round_trip_exactly(tmp_path: Path, dtype: type) -> None:
    arr = (np.arange(60).reshape(3, 4, 5) % 7).astype(dtype)
    back = read_nifti(write_nifti(Image(arr, (1, 1, 1), kind="label"), tmp_path / "l.nii.gz"))
    assert back.kind == "label" and back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, arr)


def test_bool_and_int64_are_stored_in_common_types(tmp_path: Path) -> None:
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    back = read_nifti(write_nifti(Image(mask, (1, 1, 1), kind="label"), tmp_path / "m.nii"))
    assert back.array.dtype == np.uint8 and back.array.sum() == 1 and back.array[1, 1, 1] == 1
    big = np.array([[[0, 300], [-5, 7]]], np.int64)
    back = read_nifti(write_nifti(Image(big, (1, 1, 1), kind="label"), tmp_path / "b.nii"))
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, big)


def test_scaled_and_big_endian_files_from_other_tools(tmp_path: Path) -> None:
    raw = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    nii = nib.Nifti1Image(raw, np.diag([-2.0, 3.0, 4.0, 1.0]))
    nii.header.set_slope_inter(0.5, -1.0)
    nib.save(nii, tmp_path / "s.nii")
    img = read_nifti(tmp_path / "s.nii")
    assert img.array.dtype == np.float32
    np.testing.assert_allclose(img.array, raw * 0.5 - 1.0)
    # RAS diag(-2, 3, 4) is LPS diag(2, -3, 4): i runs +L, j runs -P (anterior).
    assert img.spacing == (2.0, 3.0, 4.0)
    np.testing.assert_allclose(img.direction, np.diag([1.0, -1.0, 1.0]))
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(raw, np.eye(4), header=hdr), tmp_path / "be.nii")
    be = read_nifti(tmp_path / "be.nii")
    assert be.array.dtype == np.int16 and be.array.dtype.isnative
    np.testing.assert_array_equal(be.array, raw)


def test_channels_and_oblique_geometry_round_trip(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).random((4, 5, 6, 2)).astype(np.float32)
    img = Image(arr, (0.5, 0.7, 1.9), (12.5, -3.25, 77.0), rotation(np.array([2, 1, -1.0]), 40))
    back = read_nifti(write_nifti(img, tmp_path / "c.nii.gz"))
    assert back.channels == 2
    np.testing.assert_array_equal(back.array, arr)
    # NIfTI-1 keeps the affine in float32: agree to 1e-4 mm over the whole grid.
    corner = np.array([3, 4, 5, 1.0])
    np.testing.assert_allclose(back.affine @ corner, img.affine @ corner, atol=1e-4)
    assert (tmp_path / "c.nii.gz").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_suffixless_object_is_sniffed(tmp_path: Path, suffix: str) -> None:
    img = Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), (1.0, 2.0, 3.0), kind="label")
    src = write_nifti(img, tmp_path / f"x{suffix}")
    blob = tmp_path / "sha256-abc"
    shutil.copy(src, blob)
    back = read_image(blob)
    assert back.kind == "label" and back.spacing == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(back.array, img.array)


def test_label_request_on_foreign_files(tmp_path: Path) -> None:
    seg = nib.Nifti1Image(np.array([[[0.0, 1.0], [2.0, 0.0]]], np.float32), np.eye(4))
    nib.save(seg, tmp_path / "seg.nii.gz")
    lab = read_image(tmp_path / "seg.nii.gz", kind="label")
    assert lab.kind == "label" and lab.array.dtype.kind == "i" and int(lab.array.max()) == 2
    assert read_image(tmp_path / "seg.nii.gz").kind == "intensity"
    soft = nib.Nifti1Image(np.full((2, 2, 2), 0.5, np.float32), np.eye(4))
    nib.save(soft, tmp_path / "soft.nii.gz")
    with pytest.raises(InputError, match="non-integer") as err:
        read_image(tmp_path / "soft.nii.gz", kind="label")
    assert "soft.nii.gz" in str(err.value)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    good = write_nifti(Image(np.ones((30, 30, 30), np.float32), (1, 1, 1)), tmp_path / "g.nii.gz")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match="unreadable NIfTI") as err:
        read_image(cut)
    assert "cut.nii.gz" in str(err.value)


@pytest.mark.parametrize("name", ["short.nii", "short_object"])
def test_file_shorter_than_a_header_names_the_file(tmp_path: Path, name: str) -> None:
    # nibabel raises its own WrapStructError for a header cut short (not a ValueError)
    good = write_nifti(Image(np.ones((4, 4, 4), np.float32), (1, 1, 1)), tmp_path / "g.nii")
    short = tmp_path / name
    short.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputError, match="unreadable NIfTI") as err:
        read_image(short) if name.endswith(".nii") else read_nifti(short)
    assert name in str(err.value)
