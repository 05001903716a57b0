"""Tiny generated datasets in a real catalogue (SQLite + object store) for lab tests.

2D: 8 cases of 32x32, a bright disk on noise; label map = the disk, case labels
``bright`` (class "high"/"low" by disk intensity) and ``radius`` (mm). 3D: 8 cases of
16^3 with a bright ball. Ground truth is exact because the data is drawn from it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medarena.config import Settings, get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.imaging.image import Image
from medarena.imaging.nifti import write_nifti


def _write_dataset(root: Path, ndim: int, size: int, n: int = 8) -> None:
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
        rows.append({"case_id": key, "bright": "high" if high else "low", "radius": radius})
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "bright", "radius"])
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # 2 shared cores: spinning intra-op threads under contention made steps 5x slower
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lab_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab") / "data"


@pytest.fixture(scope="module")
def lab_settings(lab_data_dir: Path) -> Settings:
    return get_settings(data_dir=lab_data_dir)


@pytest.fixture(scope="module")
def lab_catalogue(lab_settings: Settings, lab_data_dir: Path) -> Iterator[Catalogue]:
    """A catalogue holding datasets ``disks2d`` (32^2) and ``balls3d`` (16^3); read-only."""
    tmp_path = lab_data_dir.parent
    cat = open_catalogue(lab_settings)
    for name, ndim, size in (("disks2d", 2, 32), ("balls3d", 3, 16)):
        src = tmp_path / f"src-{name}"
        _write_dataset(src, ndim, size)
        summary = ingest(cat, src, name)
        assert summary.cases_added == 8, summary.issues
        make_split(
            cat,
            name,
            SplitSpec(subsets=("train", "validation"), ratios=(0.75, 0.25), group_by=None),
        )
    yield cat
    cat.close()
