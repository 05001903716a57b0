"""Fixtures for imaging tests (the builders live in imaging_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from imaging_helpers import Series, rotation, write_series


@pytest.fixture
def ct_series(tmp_path: Path) -> Series:
    """Six axial slices, 2.5 mm apart, in shuffled file order."""
    return write_series(tmp_path / "axial")


@pytest.fixture
def oblique_series(tmp_path: Path) -> Series:
    """Six slices rotated 20 degrees about an oblique axis, 3 mm apart."""
    return write_series(tmp_path / "oblique", spacing=3.0, rot=rotation(np.array([1, 2, 0.5]), 20))


@pytest.fixture
def series_factory(tmp_path: Path) -> Callable[..., Series]:
    """Make further series under tmp_path (name first, then write_series keywords)."""

    def make(name: str, **kwargs: object) -> Series:
        return write_series(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make
