"""Tiny generated datasets in a real catalogue (SQLite + object store) for lab tests.

2D: 8 cases of 32x32, a bright disk on noise; label map = the disk, case labels
``bright`` (class "high"/"low" by disk intensity) and ``radius`` (mm). 3D: 8 cases of
16^3 with a bright ball. Ground truth is exact because the data is drawn from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from labdata import write_dataset

from medarena.config import Settings, get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec


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
        write_dataset(src, ndim, size)
        summary = ingest(cat, src, name)
        assert summary.cases_added == 8, summary.issues
        make_split(
            cat,
            name,
            SplitSpec(subsets=("train", "validation"), ratios=(0.75, 0.25), group_by=None),
        )
    yield cat
    cat.close()
