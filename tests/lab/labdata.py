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


def write_detection_dataset(
    root: Path, size: int = 16, n: int = 8, ndim: int = 3
) -> list[dict[str, object]]:
    """Detection: 1-2 bright balls (3D) or disks (2D: z = 0) per case on noise, anisotropic
    voxels (1 x 1 x 1.5 mm; 2D 1 x 1.5 mm).

    Writes ``images/``, ``labels/`` (the balls, for ingest), ``labels.csv`` and, in the
    sibling folder ``<root>-findings``, the findings as LUNA16-style ``annotations.csv`` /
    ``annotations_excluded.csv`` in world mm of the image's NIfTI (RAS) affine. Case 3
    also has a faint excluded finding. Returns the rows.
    """
    rng = np.random.default_rng(7)
    spacing = (1.0, 1.0, 1.5) if ndim == 3 else (1.0, 1.5)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    grid = np.indices((size,) * ndim).astype(float)
    column = (ndim,) + (1,) * ndim
    sp = np.asarray(spacing).reshape(column)
    rows: list[dict[str, object]] = []
    excluded: list[dict[str, object]] = []
    cases = []
    for i in range(n):
        key = f"case{i:02d}"
        image = rng.normal(0, 0.2, (size,) * ndim)
        mask = np.zeros((size,) * ndim, np.uint8)
        img = Image(image.astype(np.float32), spacing)
        affine = img.nifti_affine()
        balls = []
        for _ in range(1 + i % 2):
            for _try in range(50):
                centre = rng.uniform(4, size - 4, ndim)
                if all(np.linalg.norm((centre - c) * spacing) > 8 for c, _ in balls):
                    break
            balls.append((centre, float(rng.uniform(2.5, 3.5))))
        if i == 3:
            balls.append((np.full(ndim, 3.0), -1.0))  # excluded: radius 2 mm, faint
        for centre, radius in balls:
            r = abs(radius) if radius > 0 else 2.0
            dist = np.sqrt((((grid - centre.reshape(column)) * sp) ** 2).sum(0))
            inside = dist <= r
            image[inside] += 2.0 if radius > 0 else 0.5
            mask[inside] = 1 if radius > 0 else 2
            world = affine @ np.array([*centre, *([0.0] * (3 - ndim)), 1.0])
            row = {
                "case_id": key,
                "x": round(float(world[0]), 3),
                "y": round(float(world[1]), 3),
                "z": round(float(world[2]), 3),
                "diameter_mm": round(2 * r, 3),
            }
            (rows if radius > 0 else excluded).append(row)
        write_nifti(img.with_array(image.astype(np.float32)), root / "images" / f"{key}.nii.gz")
        write_nifti(Image(mask, spacing, kind="label"), root / "labels" / f"{key}.nii.gz")
        cases.append({"case_id": key, "site": "north" if i < 4 else "south"})
    findings_dir = root.with_name(f"{root.name}-findings")  # outside what is ingested
    findings_dir.mkdir()
    for name, table in (("annotations.csv", rows), ("annotations_excluded.csv", excluded)):
        with open(findings_dir / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["case_id", "x", "y", "z", "diameter_mm"])
            w.writeheader()
            w.writerows(table)
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "site"])
        w.writeheader()
        w.writerows(cases)
    return rows


def write_denoising_dataset(root: Path, size: int = 32, n: int = 8) -> None:
    """2D image-to-image: input = target + Gaussian noise (SD 60); target = a disk (200) on 40.

    The target is stored as the case's ``label`` object (integer values, as the low-dose CT
    demo stores its full-dose target) and the noisy input as its image.
    """
    rng = np.random.default_rng(11)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    grid = np.indices((size, size)).astype(float)
    for i in range(n):
        key = f"case{i:02d}"
        centre = rng.uniform(size * 0.35, size * 0.65, 2)
        radius = float(rng.uniform(size * 0.15, size * 0.3))
        disk = np.sqrt(((grid - centre.reshape(2, 1, 1)) ** 2).sum(0)) <= radius
        target = np.where(disk, 200, 40).astype(np.uint8)
        noisy = target + rng.normal(0, 60.0, target.shape)
        write_nifti(Image(noisy.astype(np.float32), (1.0, 1.0)), root / "images" / f"{key}.nii.gz")
        write_nifti(Image(target, (1.0, 1.0), kind="label"), root / "labels" / f"{key}.nii.gz")
