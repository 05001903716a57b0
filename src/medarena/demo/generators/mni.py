"""Real brain anatomy for the MRI demo tracks: the MNI152 tissue maps shipped inside nilearn.

nilearn's wheel carries the ICBM 2009a symmetric MNI152 T1, grey-matter and white-matter
probability maps at 1 mm (``nilearn/datasets/data/mni_icbm152_*_converted.nii.gz``). They are
read straight from the installed package with nibabel (no nilearn fetcher runs, nothing is
downloaded). CSF is not shipped, so it is derived: the intracranial volume is the closed,
hole-filled GM+WM mask, and CSF is the part of it that is neither GM nor WM. The lateral
ventricles are the CSF deeper than 12 mm inside the intracranial volume.

The maps are cropped to the intracranial volume (with a margin for per-subject scaling) and
resampled (linear) to an isotropic grid of the requested spacing.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from medarena.errors import InputError

MNI_FILES = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
#: What the MRI tracks say is real.
MNI_SOURCE = (
    "MNI152 ICBM 2009a symmetric grey- and white-matter probability maps "
    "(shipped in the nilearn package)"
)
_MARGIN_MM = 10.0


@dataclass(frozen=True)
class TissueMaps:
    """GM, WM and CSF fractions (0..1) and a ventricle mask on one isotropic grid."""

    gm: NDArray[np.float32]
    wm: NDArray[np.float32]
    csf: NDArray[np.float32]
    ventricles: NDArray[np.bool_]
    spacing: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.gm.shape)

    @property
    def brain(self) -> NDArray[np.bool_]:
        """Parenchyma: voxels that are mostly GM or WM."""
        return np.asarray((self.gm + self.wm) >= 0.5)


def mni_path(kind: str) -> str:
    """File path of a packaged MNI152 map (``gm`` or ``wm``) inside the installed nilearn."""
    try:
        base = importlib.resources.files("nilearn") / "datasets" / "data"
    except ModuleNotFoundError as exc:
        raise InputError(
            "the MRI demo tracks need nilearn (pip install 'nilearn>=0.10')", value="nilearn"
        ) from exc
    path = base / MNI_FILES[kind]
    if not path.is_file():
        raise InputError("nilearn does not ship the MNI152 map this generator reads", value=path)
    return str(path)


def _load(kind: str) -> NDArray[np.float32]:
    img = nib.load(mni_path(kind))
    arr = np.asarray(img.get_fdata(dtype=np.float32)) / 255.0  # type: ignore[attr-defined]
    # 1 mm -> 2 mm by block averaging (fast and alias-free) before the morphology below.
    sx, sy, sz = (n // 2 * 2 for n in arr.shape)
    a = arr[:sx, :sy, :sz]
    return a.reshape(sx // 2, 2, sy // 2, 2, sz // 2, 2).mean(axis=(1, 3, 5))


@lru_cache(maxsize=4)
def tissue_maps(spacing: float) -> TissueMaps:
    """The MNI152 tissue maps on an isotropic grid of ``spacing`` mm (cached per spacing)."""
    if not 2.0 <= spacing <= 12.0:
        raise InputError("MNI grid spacing must lie in 2..12 mm", value=spacing)
    gm, wm = _load("gm"), _load("wm")
    tissue = (gm + wm) > 0.2
    icv = ndi.binary_fill_holes(ndi.binary_closing(tissue, iterations=3))
    icv = ndi.binary_dilation(icv, iterations=1)
    csf = np.clip(ndi.gaussian_filter(icv.astype(np.float32), 0.7) - gm - wm, 0.0, 1.0)
    deep = ndi.binary_erosion(icv, iterations=6)  # 12 mm at 2 mm voxels
    ventricles = (csf > 0.5) & deep
    margin = round(_MARGIN_MM / 2.0)
    idx = np.argwhere(icv)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, icv.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    factor = 2.0 / spacing
    out_shape = tuple(max(round(float(b - a) * factor), 8) for a, b in zip(lo, hi, strict=True))

    def resample(a: NDArray[np.float32], order: int) -> NDArray[np.float32]:
        cropped = a[box]
        zoom = [o / n for o, n in zip(out_shape, cropped.shape, strict=True)]
        return np.clip(ndi.zoom(cropped, zoom, order=order, mode="nearest"), 0, 1).astype(
            np.float32
        )

    g, w, c = resample(gm, 1), resample(wm, 1), resample(csf, 1)
    v = resample(ventricles.astype(np.float32), 1) >= 0.5
    total = g + w + c
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    return TissueMaps(gm=g * scale, wm=w * scale, csf=c * scale, ventricles=v, spacing=spacing)


def bias_field(
    shape: tuple[int, ...], amplitude: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """A smooth multiplicative field, ``exp`` of a random quadratic, spanning about ±amplitude."""
    grids = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape), indexing="ij")
    coef = rng.normal(0.0, 1.0, 9)
    poly = sum(c * g for c, g in zip(coef[:3], grids, strict=True))
    poly = poly + sum(c * g * g for c, g in zip(coef[3:6], grids, strict=True))
    poly = poly + coef[6] * grids[0] * grids[1] + coef[7] * grids[1] * grids[2]
    poly = poly / max(float(np.abs(poly).max()), 1e-6)
    return np.exp(amplitude * poly).astype(np.float32)


def rician(
    image: NDArray[np.float32], sigma: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Magnitude-image noise: |image + complex Gaussian noise of std ``sigma`` per channel|."""
    re = image + rng.normal(0.0, sigma, image.shape)
    im = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(re * re + im * im).astype(np.float32)
