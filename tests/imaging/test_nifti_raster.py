from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from medarena.errors import InputError
from medarena.imaging import Image, read_image, read_nifti, write_nifti


def _rotation() -> np.ndarray:
    a = np.deg2rad(30)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    arr = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    img = Image(arr, (0.8, 0.9, 2.5), (1.0, -2.0, 3.0), _rotation(), meta={"x": 1})
    back = read_nifti(write_nifti(img, tmp_path / f"a{suffix}"))
    np.testing.assert_array_equal(back.array, arr)
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.spacing, img.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, img.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, img.direction, atol=1e-5)


def test_nifti_affine_is_ras_of_lps_geometry() -> None:
    img = Image(np.zeros((2, 2, 2)), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0))
    aff = img.nifti_affine()
    np.testing.assert_allclose(aff[:3, 3], [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(np.diag(aff)[:3], [-1.0, -2.0, 3.0])


def test_label_kind_and_dtype_survive(tmp_path: Path) -> None:
    lab = Image(np.array([[[0, 1], [2, 3]]], np.uint8), (1.0, 1.0, 1.0), kind="label")
    back = read_nifti(write_nifti(lab, tmp_path / "l.nii.gz"))
    assert back.kind == "label" and back.array.dtype == np.uint8
    with pytest.raises(InputError, match="integer dtype"):
        Image(np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0), kind="label")


def test_foreign_header_text_is_not_kept(tmp_path: Path) -> None:
    nii = nib.Nifti1Image(np.ones((3, 3, 3), np.int16), np.eye(4))
    nii.header["descrip"] = b"Patient Jane Roe"
    nii.header["aux_file"] = b"roe.txt"
    nib.save(nii, tmp_path / "in.nii.gz")
    out = write_nifti(read_image(tmp_path / "in.nii.gz"), tmp_path / "out.nii")
    assert b"Roe" not in out.read_bytes() and b"roe" not in out.read_bytes()


def test_broken_and_truncated_nifti(tmp_path: Path) -> None:
    good = write_nifti(Image(np.ones((20, 20, 20), np.float32), (1, 1, 1)), tmp_path / "g.nii")
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 348 + good.read_bytes()[348:])
    with pytest.raises(InputError, match=r"bad\.nii"):
        read_nifti(tmp_path / "bad.nii")
    (tmp_path / "cut.nii").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cut\.nii"):
        read_nifti(tmp_path / "cut.nii")
    with pytest.raises(InputError, match="does not exist"):
        read_nifti(tmp_path / "nope.nii")


def test_2d_image_round_trips_as_2d(tmp_path: Path) -> None:
    img = Image(np.arange(12, dtype=np.int16).reshape(4, 3), (0.5, 0.25))
    back = read_image(write_nifti(img, tmp_path / "x.nii.gz"))
    assert back.ndim == 2 and back.spacing == (0.5, 0.25)
    np.testing.assert_array_equal(back.array, img.array)


def test_png_grey_and_rgb_axes(tmp_path: Path) -> None:
    grey = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)  # 6 rows, 4 columns
    PILImage.fromarray(grey).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (4, 6) and img.array[1, 2] == grey[2, 1]
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    cimg = read_image(tmp_path / "c.png")
    assert cimg.array.shape == (7, 5, 3) and tuple(cimg.array[2, 1]) == (10, 20, 30)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"x\.png"):
        read_image(tmp_path / "x.png")


def test_skimage_retina_photograph_reads(tmp_path: Path) -> None:
    from skimage import data

    PILImage.fromarray(data.retina()).save(tmp_path / "retina.jpg", quality=95)
    img = read_image(tmp_path / "retina.jpg")
    assert img.channels == 3 and img.shape == data.retina().shape[1::-1]
