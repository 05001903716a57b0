"""PNG, JPEG and TIFF images through Pillow.

A greyscale picture becomes a 2D image of shape (width, height) (axis i runs
along a row, as for DICOM); a colour picture gets a trailing RGB channel axis.
Pixel spacing is unknown in these formats: 1.0 mm is used and recorded in meta.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from medarena.errors import InputError
from medarena.imaging.image import Image


def read_raster(path: Path | str) -> Image:
    """Read the first frame of a PNG / JPEG / TIFF file."""
    path = Path(path)
    try:
        with PILImage.open(path) as opened:
            opened.load()
            mode = opened.mode
            pil: PILImage.Image = opened
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA"):
                pil = opened.convert("RGB")
            elif mode in ("LA", "1"):
                pil = opened.convert("L")
            arr = np.asarray(pil)
    except FileNotFoundError:
        raise InputError("file does not exist", path=path) from None
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"image too large to open safely: {exc}", path=path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"unreadable image: {exc}", path=path) from None
    # (row, column[, rgb]) -> (i = column, j = row[, rgb]) as a view, no copy.
    if arr.ndim == 2:
        array = arr.T
    elif arr.ndim == 3:
        array = np.transpose(arr, (1, 0, 2))
    else:
        raise InputError(f"unsupported image array of shape {arr.shape}", path=path)
    meta = {"source_format": "image", "spacing_assumed": True, "pil_mode": mode}
    return Image(array, (1.0, 1.0), meta=meta)
