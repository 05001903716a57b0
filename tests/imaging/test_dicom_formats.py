"""DICOM pixel formats and geometry cases beyond a plain CT series.

Real files from pydicom's test data and the pydicom-data wheel (package data_store),
plus series built from CT_small.dcm by the fixtures in conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from imaging_helpers import SLICE_OFFSET, Series, rotation, write_series
from pydicom.data import get_testdata_file

from medarena.errors import InputError
from medarena.imaging import read_dicom, read_dicom_series, read_image


def _file(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def _expected_voxel_world(s: Series, i: int, j: int, k: int) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1: P = S + i * dc * X + j * dr * Y for slice k (sorted)."""
    ps = float(pydicom.dcmread(s.files[0], stop_before_pixels=True).PixelSpacing[0])
    return s.positions[k] + i * ps * s.row_dir + j * ps * s.col_dir


def test_oblique_series_geometry_and_values(oblique_series: Series) -> None:
    img = read_dicom_series(oblique_series.files)
    assert img.shape == (128, 128, 6) and img.array.dtype == np.int16
    for i, j, k in [(0, 0, 0), (5, 17, 3), (127, 127, 5)]:
        world = img.affine @ np.array([i, j, k, 1.0])
        np.testing.assert_allclose(
            world[:3], _expected_voxel_world(oblique_series, i, j, k), atol=1e-4
        )
    raw = oblique_series.raw.T.astype(np.int32)
    for k in range(6):  # file order was shuffled and InstanceNumber reversed
        np.testing.assert_array_equal(img.array[:, :, k], raw + SLICE_OFFSET * k - 1024)
    assert img.meta["rescale_applied"] is True and img.meta["modality"] == "CT"
    assert "PatientName" not in str(img.meta)


def test_reading_decodes_into_one_buffer_without_copies(ct_series: Series) -> None:
    img = read_dicom_series(ct_series.files)
    # The (i, j, k) array is a transposed view of the (k, j, i) decode buffer.
    assert img.array.flags.f_contiguous and img.array.base is not None


def test_folder_and_suffixless_files(ct_series: Series, tmp_path: Path) -> None:
    folder = ct_series.files[0].parent
    (folder / "notes.txt").write_text("not an image")
    a = read_image(folder)
    b = read_dicom_series(ct_series.files)
    np.testing.assert_array_equal(a.array, b.array)
    blob = tmp_path / "0123abcd"  # content-addressed objects have no suffix
    shutil.copy(ct_series.files[0], blob)
    assert read_image(blob).shape == (128, 128, 1)


def test_folder_with_two_series_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "two" / "a", n=2)
    write_series(tmp_path / "two" / "b", n=2)
    with pytest.raises(InputError, match="exactly one DICOM series, found 2"):
        read_image(tmp_path / "two")


def test_orientation_mismatch_and_gantry_tilt_name_the_file(tmp_path: Path) -> None:
    s = write_series(tmp_path / "s", n=3, series_uid="1.2.3.4")
    odd = pydicom.dcmread(s.files[1])
    odd.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    odd.save_as(s.files[1])
    with pytest.raises(InputError, match="orientation differs") as err:
        read_dicom_series(s.files)
    assert s.files[1].name in str(err.value)
    tilt = write_series(tmp_path / "tilt", n=3)
    for k, f in enumerate(sorted(tilt.files, key=lambda f: _z(f))):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [-158.0, -179.0 + 1.5 * k, -75.0 + 2.5 * k]  # 31 degree tilt
        ds.save_as(f)
    with pytest.raises(InputError, match="gantry tilt"):
        read_dicom_series(tilt.files)


def _z(path: Path) -> float:
    return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])


@pytest.mark.parametrize(
    "other",
    ["SC_ybr_full_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm"],
)
def test_colour_encodings_read_as_the_same_rgb_picture(other: str) -> None:
    ref = read_image(_file("SC_rgb.dcm"))
    img = read_image(_file(other))
    assert img.array.shape == (100, 100, 3) and img.channels == 3 and img.ndim == 2
    assert img.meta["colour_space"] == "RGB"
    # YBR -> RGB conversion and JPEG round to within a few grey levels.
    assert np.abs(img.array.astype(int) - ref.array.astype(int)).max() <= 6
    # SC_rgb's first row (j = 0) is red, row 50 is (128, 128, 255): i runs along the row.
    assert tuple(ref.array[0, 0]) == (255, 0, 0) and tuple(ref.array[0, 50]) == (128, 128, 255)


def test_palette_colour_is_expanded_to_rgb() -> None:
    ds = pydicom.dcmread(_file("OBXXXX1A.dcm"))
    img = read_image(_file("OBXXXX1A.dcm"))
    assert img.array.shape == (int(ds.Columns), int(ds.Rows), 3)
    index = int(ds.pixel_array[10, 20])
    lut_red = np.frombuffer(ds.RedPaletteColorLookupTableData, "<u2")
    first = int(ds.RedPaletteColorLookupTableDescriptor[1])
    assert img.array[20, 10, 0] == lut_red[max(index - first, 0)]


def test_multiframe_colour_gets_frames_and_channels() -> None:
    img = read_image(_file("SC_rgb_rle_2frame.dcm"))
    assert img.array.shape == (100, 100, 2, 3) and img.channels == 3 and img.ndim == 3


def test_rt_dose_grid_geometry_and_scaling() -> None:
    ds = pydicom.dcmread(_file("rtdose.dcm"))
    img = read_dicom(_file("rtdose.dcm"))
    assert img.shape == (int(ds.Columns), int(ds.Rows), int(ds.NumberOfFrames))
    offsets = [float(x) for x in ds.GridFrameOffsetVector]
    assert img.spacing[2] == pytest.approx(offsets[1] - offsets[0])
    np.testing.assert_allclose(img.origin, [float(x) for x in ds.ImagePositionPatient])
    assert img.array.dtype == np.float32
    expected = ds.pixel_array[3].T * float(ds.DoseGridScaling)
    np.testing.assert_allclose(img.array[:, :, 3], expected, rtol=1e-6)


def test_big_endian_is_read_in_native_order() -> None:
    big = read_dicom(_file("emri_small_big_endian.dcm"))
    little = read_dicom(_file("emri_small.dcm"))
    assert big.array.dtype.isnative
    np.testing.assert_array_equal(big.array, little.array)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_single_frames_match_uncompressed(name: str) -> None:
    np.testing.assert_array_equal(
        read_dicom(_file(name)).array, read_dicom(_file("MR_small.dcm")).array
    )


def test_jpeg2000_radiograph_and_file_without_meta() -> None:
    img = read_image(_file("JPEG2000.dcm"))
    assert img.ndim == 2 and img.spacing == (2.26, 2.26)
    old = read_image(_file("OT-PAL-8-face.dcm"))  # no preamble or file meta: still read
    assert old.array.shape == (640, 480, 3)


@pytest.mark.parametrize(
    "name, rule",
    [
        ("MR_truncated.dcm", "cannot decode pixel data"),
        ("rtplan.dcm", "no pixel data"),
        ("JPEG-lossy.dcm", "cannot decode pixel data"),
    ],
)
def test_unusable_files_are_input_errors_naming_the_file(name: str, rule: str) -> None:
    with pytest.raises(InputError, match=rule) as err:
        read_image(_file(name))
    assert name in str(err.value)


def test_non_dicom_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(InputError, match="not a DICOM file") as err:
        read_dicom(junk)
    assert "junk.bin" in str(err.value)
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.dcm")
    with pytest.raises(InputError, match="at least one file"):
        read_dicom_series([])


def test_single_slice_keeps_3d_geometry(tmp_path: Path) -> None:
    s = write_series(tmp_path / "one", n=1, rot=rotation(np.array([0, 1.0, 0]), 90))
    img = read_dicom(s.files[0])
    assert img.shape == (128, 128, 1) and img.spacing[2] == 5.0  # CT_small SliceThickness
    np.testing.assert_allclose(img.direction[:, 0], s.row_dir, atol=1e-7)
