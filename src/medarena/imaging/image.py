"""The Image type: voxels plus the geometry and kind they belong to.

Conventions (every reader and writer follows them):
- ``array`` axes are voxel-index order (i, j, k) exactly as in NIfTI: for DICOM,
  i runs along a row (the column index of a frame), j down the columns (the row
  index) and k across slices. Colour images carry one trailing channel axis.
- ``spacing`` is in mm, one value per spatial array axis, in array-axis order.
- World coordinates are the DICOM patient system, LPS, in mm. ``origin`` is the
  world position of the centre of voxel (0, 0, 0); ``direction`` is a square
  matrix whose columns are the unit world directions of the array axes.
- ``kind`` is "intensity" or "label"; a label map has an integer (or bool) dtype,
  so code that resamples or displays it can tell it apart by itself.
- ``affine`` maps a voxel index to LPS world: x = origin + direction @ (spacing * ijk).
  ``nifti_affine()`` is the same map into RAS (x and y negated), 4x4 also for 2D
  images, which NIfTI, nibabel and dcm2niix use.
- 2D images (radiographs, photographs) have 2 spacing values; without patient
  geometry their origin is 0 and direction the identity.
- ``meta`` holds non-identifying source facts only (modality, manufacturer, model,
  body_part, sex, age, study_date, series_uid, photometric, rescale_applied,
  spacing_assumed, source_format ...): never names, IDs or free text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medarena.errors import InputError

Kind = Literal["intensity", "label"]
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Image:
    """An image or label map with its geometry; see the module docstring for conventions."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    direction: np.ndarray = field(default_factory=lambda: np.eye(0))
    kind: Kind = "intensity"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise InputError("array must be a numpy array", value=type(self.array).__name__)
        nd = len(self.spacing)
        if nd not in (2, 3):
            raise InputError("an image has 2 or 3 spatial axes", value=self.spacing)
        if self.array.ndim not in (nd, nd + 1):
            raise InputError(
                f"array of shape {self.array.shape} does not fit {nd} spatial axes "
                "(plus at most one trailing channel axis)"
            )
        spacing = tuple(float(s) for s in self.spacing)
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError("spacing must be positive and finite (mm)", value=spacing)
        object.__setattr__(self, "spacing", spacing)
        origin = tuple(float(o) for o in self.origin) if self.origin else (0.0,) * nd
        if len(origin) != nd:
            raise InputError(f"origin must have {nd} values", value=origin)
        object.__setattr__(self, "origin", origin)
        direction = np.asarray(self.direction, dtype=float)
        if direction.size == 0:
            direction = np.eye(nd)
        if direction.shape != (nd, nd):
            raise InputError(f"direction must be a {nd}x{nd} matrix", value=direction.shape)
        if not np.allclose(direction.T @ direction, np.eye(nd), atol=1e-4):
            raise InputError("direction columns must be orthonormal", value=direction.tolist())
        object.__setattr__(self, "direction", direction)
        if self.kind not in ("intensity", "label"):
            raise InputError("kind must be 'intensity' or 'label'", value=self.kind)
        if self.kind == "label" and self.array.dtype.kind not in "iub":
            raise InputError("a label map must have an integer dtype", value=str(self.array.dtype))

    def __repr__(self) -> str:
        return (
            f"Image(kind={self.kind!r}, shape={self.array.shape}, dtype={self.array.dtype}, "
            f"spacing={self.spacing}, origin={self.origin})"
        )

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.spacing)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape (without the channel axis)."""
        return tuple(int(s) for s in self.array.shape[: self.ndim])

    @property
    def channels(self) -> int:
        """Number of values per voxel: 1, or the size of the trailing channel axis."""
        return 1 if self.array.ndim == self.ndim else int(self.array.shape[-1])

    @property
    def affine(self) -> np.ndarray:
        """Voxel index -> LPS world (mm), as a homogeneous (ndim+1)^2 matrix."""
        nd = self.ndim
        a = np.eye(nd + 1)
        a[:nd, :nd] = self.direction * np.asarray(self.spacing)[None, :]
        a[:nd, nd] = self.origin
        return a

    def nifti_affine(self) -> np.ndarray:
        """The 4x4 voxel -> RAS affine that NIfTI, nibabel and dcm2niix use."""
        a = np.eye(4)
        nd = self.ndim
        lps = self.affine
        a[:nd, :nd] = lps[:nd, :nd]
        a[:nd, 3] = lps[:nd, nd]
        return _LPS_TO_RAS @ a

    def with_array(self, array: np.ndarray, kind: Kind | None = None) -> Image:
        """The same geometry around other voxels (shape must match)."""
        if array.shape[: self.ndim] != self.shape:
            raise InputError(
                f"new array shape {array.shape} does not match image shape {self.shape}"
            )
        return Image(
            array, self.spacing, self.origin, self.direction, kind or self.kind, dict(self.meta)
        )


def from_ras_affine(
    array: np.ndarray,
    affine: np.ndarray,
    kind: Kind = "intensity",
    ndim: int = 3,
    meta: dict[str, Any] | None = None,
) -> Image:
    """An Image from voxels and a 4x4 voxel -> RAS affine (NIfTI convention)."""
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=float)
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if not np.all(spacing > 0):
        raise InputError("affine has a zero-length axis", value=np.asarray(affine).tolist())
    direction = m / spacing[None, :]
    # Shears or non-orthogonal axes cannot be represented; orthonormalise within tolerance.
    u, _, vt = np.linalg.svd(direction)
    ortho = u @ vt
    if not np.allclose(ortho, direction, atol=1e-3):
        raise InputError("affine is sheared: its axes are not orthogonal")
    if ndim == 2:
        return Image(array, tuple(spacing[:2]), tuple(lps[:2, 3]), ortho[:2, :2], kind, meta or {})
    return Image(array, tuple(spacing), tuple(lps[:3, 3]), ortho, kind, meta or {})
