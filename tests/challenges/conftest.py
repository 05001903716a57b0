"""Fixtures for challenge tests: a catalogue with a small split dataset, users, a spec."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy.orm import Session

from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.db.platform_models import User

N_CASES = 10

SPEC_YAML = (Path(__file__).parent / "spec_small.yaml").read_text()


def write_dataset(root: Path, n: int = N_CASES) -> None:
    """``n`` tiny NIfTI cases with label maps and a grade column, in the generic layout."""
    (root / "labels").mkdir(parents=True)
    rows = ["case_id,grade"]
    for i in range(n):
        rng = np.random.default_rng(i)
        img = rng.normal(100, 10, (6, 5, 4)).astype(np.float32)
        lab = np.zeros((6, 5, 4), np.uint8)
        lab[1 : 2 + i % 3, 1:3, 1:3] = 1
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(img, affine), root / f"case{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labels" / f"case{i:02d}.nii.gz")
        rows.append(f"case{i:02d},{i % 4}")
    (root / "grades.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="session")
def _template_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data dir with dataset 'brain' and split 'challenge' (test hidden), built once."""
    base = tmp_path_factory.mktemp("challenge-template")
    cat = open_catalogue(get_settings(data_dir=base / "data"))
    write_dataset(base / "src")
    summary = ingest(cat, base / "src", "brain")
    assert summary.cases_added == N_CASES and not summary.issues
    make_split(
        cat,
        "brain",
        SplitSpec(name="challenge", ratios=(0.6, 0.2, 0.2), group_by=None, hidden=("test",)),
    )
    cat.close()
    return base / "data"


@pytest.fixture
def catalogue(_template_data_dir: Path, tmp_path: Path) -> Iterator[Catalogue]:
    """A private copy of the template catalogue (SQLite file and object store)."""
    shutil.copytree(_template_data_dir, tmp_path / "data")
    cat = open_catalogue(get_settings(data_dir=tmp_path / "data"))
    yield cat
    cat.close()


@pytest.fixture
def session(catalogue: Catalogue) -> Iterator[Session]:
    with catalogue.sessions() as s:
        yield s


@pytest.fixture
def spec_yaml() -> str:
    return SPEC_YAML


@pytest.fixture
def spec() -> ChallengeSpec:
    return parse_spec(SPEC_YAML, "spec.yaml")


UserFactory = Callable[..., User]


@pytest.fixture
def make_user(session: Session) -> UserFactory:
    """Add a user row (password hashing is the accounts package's concern, not tested here)."""

    def make(email: str, *, admin: bool = False) -> User:
        u = User(email=email, display_name=email.split("@")[0], password_hash="x", is_admin=admin)
        session.add(u)
        session.flush()
        return u

    return make
