"""Tiny generated lab datasets: a bright disk (2D) or ball (3D) on noise, exact ground truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medarena.imaging.image import Image
from medarena.imaging.nifti import write_nifti


def write_dataset(root: Path, ndim: int, size: int, n: int = 8) -> None:
    rng = np.random.default_rng(ndim)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    grid = np.indices((size,) * ndim).astype(float)
    for i in range(n):
        centre = rng.uniform(size * 0.35, size * 0.65, ndim)
        radius = float(rng.uniform(size * 0.12, size * 0.3))
        mask = np.sqrt(((grid - centre.reshape((ndim,) + (1,) * ndim)) ** 2).sum(0)) <= radius
        high = i % 2 == 0
        image = rng.normal(0, 0.2, mask.shape) + mask * (2.0 if high else 1.0)
        key = f"case{i:02d}"
        spacing = (1.0,) * ndim
        write_nifti(Image(image.astype(np.float32), spacing), root / "images" / f"{key}.nii.gz")
        write_nifti(
            Image(mask.astype(np.uint8), spacing, kind="label"), root / "labels" / f"{key}.nii.gz"
        )
        rows.append(
            {
                "case_id": key,
                "bright": "high" if high else "low",
                "radius": radius,
                "is_bright": int(high),
                "is_big": int(radius > size * 0.21),
                "sex": "F" if i % 4 < 2 else "M",
                "age": 30 + 6 * i,
                "site": "north" if i < 4 else "south",
            }
        )
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
