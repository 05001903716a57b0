"""PNG / JPEG / TIFF variants: bit depths, palettes, float TIFF, file sniffing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medarena.errors import InputError
from medarena.imaging import read_image


def test_16_bit_png_keeps_its_values(tmp_path: Path) -> None:
    grey = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    PILImage.fromarray(grey).save(tmp_path / "x.png")
    img = read_image(tmp_path / "x.png")
    assert img.array.dtype == np.uint16 and img.shape == (4, 3)
    np.testing.assert_array_equal(img.array, grey.T)
    assert img.spacing == (1.0, 1.0) and img.meta["spacing_assumed"] is True


def test_float_tiff_and_rgb_tiff(tmp_path: Path) -> None:
    f = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    PILImage.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").array, f.T)
    rgb = np.random.default_rng(1).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "c.tiff")
    np.testing.assert_array_equal(read_image(tmp_path / "c.tiff").array, rgb.transpose(1, 0, 2))


def test_palette_png_becomes_rgb(tmp_path: Path) -> None:
    pal = PILImage.new("P", (4, 2))
    pal.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    pal.putpixel((3, 1), 1)  # (x = column 3, y = row 1)
    pal.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.array.shape == (4, 2, 3) and tuple(img.array[3, 1]) == (200, 10, 20)


def test_suffixless_png_is_sniffed_and_bombs_refused(tmp_path: Path) -> None:
    PILImage.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "a.png")
    shutil.copy(tmp_path / "a.png", tmp_path / "blob")
    assert read_image(tmp_path / "blob").shape == (3, 3)
    PILImage.fromarray(np.zeros((300, 300), np.uint8)).save(tmp_path / "big.png")
    old = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = 100  # Pillow refuses > 2x this many pixels
    try:
        with pytest.raises(InputError, match="too large") as err:
            read_image(tmp_path / "big.png")
    finally:
        PILImage.MAX_IMAGE_PIXELS = old
    assert "big.png" in str(err.value)
