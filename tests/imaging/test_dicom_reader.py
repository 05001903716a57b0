from __future__ import annotations

import copy
import random
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medarena.errors import InputError
from medarena.imaging import group_dicom_series, read_dicom, read_dicom_series, read_image
from medarena_testkit import make_ct_series

DATA_STORE = Path(__import__("data_store").__file__).parent / "data"


def _oblique_series(dest: Path, n: int = 5) -> list[Path]:
    """CT_small pixels in an oblique orientation (rotated about z and tilted), shuffled names."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    a, b = np.deg2rad(20), np.deg2rad(10)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]
    )
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    uid = generate_uid()
    dest.mkdir(parents=True, exist_ok=True)
    names = [f"x{random.Random(k).randint(0, 10**6):07d}_{k}.dcm" for k in range(n)]
    out = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [*row.round(6), *col.round(6)]
        ds.ImagePositionPatient = list((np.array([10.0, -20.0, 30.0]) + 3.0 * k * normal).round(5))
        ds.InstanceNumber = n - k  # instance numbers reversed: sorting must use positions
        ds.PixelData = (ds.pixel_array + 7 * k).astype(ds.pixel_array.dtype).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        p = dest / names[k]
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def test_series_sorted_by_position_with_geometry(tmp_path: Path) -> None:
    files = _oblique_series(tmp_path / "s")
    random.Random(0).shuffle(files)
    img = read_dicom_series(files)
    assert img.shape == (128, 128, 5)
    assert img.spacing[2] == pytest.approx(3.0, abs=1e-4)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    for k in range(5):  # slice k holds pixels + 7k, rescaled by -1024
        np.testing.assert_array_equal(img.array[:, :, k], (base + 7 * k).T.astype(int) - 1024)
    assert img.array.dtype == np.int16
    # Voxel (i, j, k) -> world: origin + i*col_sp*row_dir + j*row_sp*col_dir + k*3*normal.
    ds0 = pydicom.dcmread(sorted(files, key=lambda p: int(p.stem.split("_")[1]))[0])
    iop = np.asarray(ds0.ImageOrientationPatient, float)
    world = img.affine @ np.array([2, 3, 4, 1.0])
    ps = [float(x) for x in ds0.PixelSpacing]
    expected = (
        np.asarray(ds0.ImagePositionPatient, float)
        + 2 * ps[1] * iop[:3]
        + 3 * ps[0] * iop[3:]
        + 4 * 3.0 * np.cross(iop[:3], iop[3:])
    )
    np.testing.assert_allclose(world[:3], expected, atol=1e-3)


def test_rescale_to_float_when_slope_is_fractional(tmp_path: Path) -> None:
    files = make_ct_series(tmp_path / "s", n=2)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = 0.5
        ds.RescaleIntercept = 10
        ds.save_as(f)
    img = read_dicom_series(files)
    raw = pydicom.dcmread(files[0]).pixel_array.T
    assert img.array.dtype == np.float32
    np.testing.assert_allclose(img.array[:, :, 0], raw * 0.5 + 10)


def test_enhanced_multiframe_geometry_from_functional_groups() -> None:
    path = DATA_STORE / "eCT_Supplemental.dcm"  # Enhanced CT, 2 frames, functional groups
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    assert img.shape == (512, 512, 2)
    pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert img.spacing[:2] == (float(pm.PixelSpacing[1]), float(pm.PixelSpacing[0]))
    positions = [
        np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    first = min(positions, key=lambda p: float(p @ img.direction[:, 2]))
    np.testing.assert_allclose(img.origin, first, atol=1e-4)
    assert img.spacing[2] == pytest.approx(np.linalg.norm(positions[1] - positions[0]))
    # Rescale comes from the shared PixelValueTransformationSequence.
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    raw = ds.pixel_array[0].T.astype(np.int64)
    expected = raw * int(pvt.RescaleSlope) + int(pvt.RescaleIntercept)
    k0 = int(np.argmin([float(p @ img.direction[:, 2]) for p in positions]))
    np.testing.assert_array_equal(img.array[:, :, 0 if k0 == 0 else 1], expected)


def test_multiframe_without_functional_groups_uses_spacing_between_slices() -> None:
    ds = pydicom.dcmread(DATA_STORE / "emri_small.dcm", stop_before_pixels=True)
    img = read_dicom(DATA_STORE / "emri_small.dcm")
    assert img.shape == (64, 64, 10) and img.array.dtype == np.uint16
    assert img.spacing[2] == pytest.approx(float(ds.SpacingBetweenSlices))
    assert img.meta["spacing_assumed"] is True  # the file has no PixelSpacing at all


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("693_J2KR.dcm", "693_UNCR.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ],
)
def test_lossless_compressed_transfer_syntaxes_decode_identically(
    compressed: str, reference: str
) -> None:
    a = read_dicom(DATA_STORE / compressed)
    b = read_dicom(DATA_STORE / reference)
    np.testing.assert_array_equal(a.array, b.array)


def test_radiograph_is_2d_with_imager_spacing(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DATA_STORE / "RG3_UNCR.dcm")  # CR without any pixel spacing
    img = read_image(DATA_STORE / "RG3_UNCR.dcm")
    assert img.ndim == 2 and img.shape == (int(ds.Columns), int(ds.Rows))
    assert img.spacing == (1.0, 1.0) and img.meta["spacing_assumed"] is True
    np.testing.assert_array_equal(img.array, ds.pixel_array.T)
    ds.ImagerPixelSpacing = [0.143, 0.15]  # (row spacing, column spacing)
    ds.save_as(tmp_path / "rg.dcm")
    img = read_image(tmp_path / "rg.dcm")
    assert img.spacing == (0.15, 0.143) and "spacing_assumed" not in img.meta
    # RG1 stores PixelSpacing 0\0, which is no spacing: fall back to 1.0 and say so.
    rg1 = read_image(DATA_STORE / "RG1_UNCR.dcm")
    assert rg1.spacing == (1.0, 1.0) and rg1.meta["spacing_assumed"] is True


def test_colour_frames_get_a_channel_axis() -> None:
    img = read_image(DATA_STORE / "SC_rgb.dcm")
    assert img.ndim == 2 and img.array.shape == (100, 100, 3) and img.channels == 3


def test_mixed_series_and_bad_files_name_the_file(tmp_path: Path) -> None:
    a = make_ct_series(tmp_path / "a", n=2)
    b = make_ct_series(tmp_path / "b", n=2)
    with pytest.raises(InputError, match="another series"):
        read_dicom_series([*a, b[0]])
    dup = tmp_path / "dup.dcm"
    shutil.copy(a[0], dup)
    ds = pydicom.dcmread(dup)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(dup)
    with pytest.raises(InputError, match="share one position"):
        read_dicom_series([*a, dup])
    gap = make_ct_series(tmp_path / "gap", n=4)
    with pytest.raises(InputError, match="not uniform"):
        read_dicom_series([gap[0], gap[1], gap[3]])
    truncated = tmp_path / "t.dcm"
    truncated.write_bytes(a[0].read_bytes()[:3000])
    with pytest.raises(InputError) as err:
        read_dicom(truncated)
    assert "t.dcm" in str(err.value)


def test_group_series_skips_non_dicom_and_dicomdir(tmp_path: Path) -> None:
    a = make_ct_series(tmp_path / "a", n=2)
    b = make_ct_series(tmp_path / "b", n=3)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    dicomdir = Path(str(get_testdata_file("DICOMDIR")))
    skipped: list[tuple[Path, str]] = []
    groups = group_dicom_series([*a, junk, *b, dicomdir], skipped=skipped)
    assert sorted(len(v) for v in groups.values()) == [2, 3]
    assert sorted(groups[str(pydicom.dcmread(a[0]).SeriesInstanceUID)]) == sorted(a)
    assert [p for p, _ in skipped] == [junk, dicomdir]
    assert "DICOMDIR" in skipped[1][1]
    assert group_dicom_series([junk]) == {}


def _canonical(nii: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    can = nib.as_closest_canonical(nii)
    return np.asanyarray(can.dataobj).squeeze(), can.affine


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["axial", "oblique"])
def test_conversion_agrees_with_dcm2niix(tmp_path: Path, kind: str) -> None:
    """Our DICOM -> NIfTI conversion and dcm2niix's agree on affine and voxel values."""
    from medarena.imaging import write_nifti

    if shutil.which("dcm2niix") is None:
        pytest.fail("dcm2niix is not installed: run ./scripts/install --test (Debian dcm2niix)")
    src = tmp_path / "dicom"
    files = make_ct_series(src, n=6) if kind == "axial" else _oblique_series(src, n=6)
    out = tmp_path / "d2n"
    out.mkdir()
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    [ref_path] = list(out.glob("*.nii"))
    ours = write_nifti(read_dicom_series(files), tmp_path / "ours.nii.gz")
    ref_data, ref_aff = _canonical(nib.load(ref_path))
    our_data, our_aff = _canonical(nib.load(ours))
    np.testing.assert_allclose(our_aff, ref_aff, atol=1e-3)
    assert our_data.shape == ref_data.shape
    # dcm2niix stores raw values with scl_slope/inter; nibabel applies them in dataobj.
    np.testing.assert_allclose(our_data, ref_data, atol=1e-4)
