"""Dose tracks end to end: reference stored as case objects, archives checked, OpenKBP scores.

A tiny generated dataset: four CTs ingested as usual, then for each case a reference
folder (dose in Gy, possible-dose mask, structures PTV70 and SpinalCord) attached with
:func:`medarena.datasets.dose.attach_dose_references`. Submissions go through
:func:`submit` and a real worker, on SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import gzip
import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select
from track_helpers import (
    PHASES,
    add_team_member,
    create_challenge,
    point_cli_at,
    score_all,
    scored_result,
    split_dataset,
    submit_bytes,
)

from medarena.challenges.data import plan_download
from medarena.challenges.leaderboard import build_leaderboard
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.submissions import SubmissionRefused
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.datasets.dose import attach_dose_references
from medarena.datasets.ingest import ingest
from medarena.db.models import Case
from medarena.db.platform_models import (
    Challenge,
    Submission,
    User,
)
from medarena.errors import InputError

SHAPE = (8, 8, 6)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm^3 voxels: 0.1 cc is 50 voxels
N = 4


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))


def _dose(i: int) -> np.ndarray:
    """A dose peak of 70 Gy at the target, falling off with distance; 0 outside the body."""
    x, y, _ = np.indices(SHAPE, dtype=np.float32)
    dose = 70.0 * np.exp(-((x - 3.5 - i % 2) ** 2 + (y - 3.5) ** 2) / 20.0)
    dose[_body() == 0] = 0.0
    return dose.astype(np.float32)


def _body() -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[1:7, 1:7, :] = 1
    return m


def _write_world(src: Path, refs: Path) -> None:
    for i in range(N):
        key = f"hn{i}"
        ct = np.where(_body() > 0, 40.0, -1000.0).astype(np.float32)
        _save(
            ct + np.random.default_rng(i).normal(0, 5, SHAPE).astype(np.float32),
            src / f"{key}.nii.gz",
        )
        ptv, cord = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
        ptv[3:5, 3:5, 2:4] = 1
        cord[5:7, 1:3, :] = 1
        _save(_dose(i), refs / key / "dose.nii.gz")
        _save(_body(), refs / key / "possible_dose_mask.nii.gz")
        _save(ptv, refs / key / "PTV70.nii.gz")
        _save(cord, refs / key / "SpinalCord.nii.gz")


SPEC = {
    "slug": "kbp",
    "title": "Dose prediction",
    "rules": "Predict the dose.",
    "tracks": [
        {
            "slug": "dose",
            "title": "Dose",
            "task": "dose",
            "task_config": {"rois": ["PTV70", "SpinalCord"], "targets": ["PTV70"]},
            "metrics": ["dose_score", "dvh_score"],
            "primary_metric": "dose_score",
            "dataset": "hn",
            "split": "s",
        }
    ],
    "phases": PHASES,
}


@dataclass
class World:
    cat: Catalogue
    uid: int
    refs: Path
    keys: dict[str, list[str]]  # subset -> case keys


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> World:
    settings = get_settings(data_dir=tmp_path / "data", database_url=db_url, secret_key="k" * 48)
    cat = open_catalogue(settings)
    _write_world(tmp_path / "src", tmp_path / "refs")
    assert ingest(cat, tmp_path / "src", "hn").cases_added == N
    split_dataset(cat, "hn")
    summary = attach_dose_references(cat, "hn", tmp_path / "refs")
    assert (summary.cases, summary.objects, summary.rois) == (N, 4 * N, {"PTV70", "SpinalCord"})
    uid, keys = create_challenge(cat, SPEC, "hn")
    assert [len(v) for v in keys.values()] == [2, 1, 1]
    yield World(cat, uid, tmp_path / "refs", keys)
    cat.close()


def _zip(members: dict[str, np.ndarray | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in members.items():
            if isinstance(arr, bytes):
                zf.writestr(name, arr)
            else:
                raw = nib.Nifti1Image(arr, AFFINE).to_bytes()
                zf.writestr(name, gzip.compress(raw) if name.endswith(".gz") else raw)
    return buf.getvalue()


def _submit(w: World, data: bytes, phase: str = "val") -> int:
    return submit_bytes(w.cat, w.uid, "kbp", "dose", phase, data, "doses.zip")


def test_dose_track_scores_openkbp_dose_and_dvh(world: World) -> None:
    (key,) = world.keys["validation"]
    i = int(key[2:])
    perfect = _submit(world, _zip({f"{key}.nii": _dose(i)}))
    # 1 Gy more everywhere: |diff| = 1 in every voxel of the possible-dose mask, and every
    # DVH value (D99, D95, D1 of the target; D0.1cc and mean of the cord) is 1 Gy higher
    shifted = _submit(world, _zip({f"{key}.nii.gz": _dose(i) + 1.0}))
    assert score_all(world.cat) == 2
    sub, res = scored_result(world.cat, perfect)
    assert sub.primary_score == pytest.approx(0.0) and sub.scores["dvh_score"] == pytest.approx(0)
    sub, res = scored_result(world.cat, shifted)
    assert sub.primary_score == pytest.approx(1.0, abs=1e-5)
    assert res.cases[key]["dvh_score"] == pytest.approx(1.0, abs=1e-4)
    assert res.cases[key]["dvh_error/D_95/PTV70"] == pytest.approx(1.0, abs=1e-4)
    assert res.cases[key]["dvh_error/D_0.1_cc/SpinalCord"] == pytest.approx(1.0, abs=1e-4)
    assert res.dataset_metrics["dose_score"] == pytest.approx(1.0, abs=1e-5)
    assert res.dataset_metrics["dvh_score"] == pytest.approx(1.0, abs=1e-4)
    assert res.dataset_metrics["n_dvh_items"] == 5.0  # 3 target + 2 OAR metrics
    assert not res.failed and not res.missing
    # a second team 2 Gy off: lower is better, so ada's best (the perfect one) ranks first
    with world.cat.sessions() as s, s.begin():
        bob_id = add_team_member(
            s, s.scalars(select(Challenge)).one(), "bob@example.org", "bob-team"
        )
        bob = World(world.cat, bob_id, world.refs, world.keys)
    _submit(bob, _zip({f"{key}.nii": _dose(i) + 2.0}))
    score_all(world.cat)
    with world.cat.sessions() as s:
        ch = s.scalars(select(Challenge)).one()
        board = build_leaderboard(
            s, world.cat.store, ChallengeSpec.model_validate(SPEC), ch.id, "val", "dose"
        )
    assert board.higher_is_better is False
    assert [(r.team, r.rank) for r in board.rows] == [("ada-team", 1), ("bob-team", 2)]
    assert [r.primary for r in board.rows] == pytest.approx([0.0, 2.0], abs=1e-5)


def test_bad_dose_archives_are_refused_with_every_problem(world: World) -> None:
    (key,) = world.keys["validation"]
    nan = _dose(0)
    nan[0, 0, 0] = np.nan
    neg = _dose(0) - 5.0
    for members, words in (
        ({f"{key}.nii": nan}, ["NaN"]),
        ({f"{key}.nii": neg}, ["negative", "-5"]),
        ({f"{key}.nii": np.zeros((8, 8, 5), np.float32)}, ["shape [8, 8, 5]", "[8, 8, 6]"]),
        ({"hn9.nii": _dose(0)}, ["unknown case ids", "hn9", f"no prediction for 1 case(s): {key}"]),
        ({f"{key}.nii": b"not a nifti"}, ["not a readable NIfTI"]),
    ):
        with pytest.raises(SubmissionRefused) as info:
            _submit(world, _zip(members))
        text = " ".join(info.value.problems)
        for w in words:
            assert w in text, (w, text)
    with world.cat.sessions() as s:
        assert s.scalars(select(Submission)).all() == []  # nothing stored


def test_downloads_give_structures_as_inputs_and_never_a_hidden_dose(world: World) -> None:
    with world.cat.sessions() as s:
        ch = s.scalars(select(Challenge)).one()
        user = s.get(User, world.uid)
        training = plan_download(s, ch, user, "training", "dose")
        names = {e.name for e in training.entries}
        for key in world.keys["train"]:
            assert f"labels/{key}.nii.gz" in names  # the dose is the training label
            assert f"structures/{key}/PTV70.nii.gz" in names
            assert f"structures/{key}/possible_dose_mask.nii.gz" in names
        (hidden,) = world.keys["test"]
        inputs = plan_download(s, ch, user, "inputs", "dose", "test")
        names = {e.name for e in inputs.entries}
        assert f"structures/{hidden}/SpinalCord.nii.gz" in names
        assert not any(n.startswith("labels/") or n.endswith("/dose.nii.gz") for n in names)


def test_reference_folders_are_checked_before_anything_is_stored(world: World) -> None:
    key = world.keys["train"][0]
    with world.cat.sessions() as s:
        case = s.scalars(select(Case).where(Case.case_key == key)).one()
        before = sorted((o.role, o.digest) for o in case.objects)
    folder = world.refs / key
    _save(np.full(SHAPE, np.nan, np.float32), folder / "dose.nii.gz")
    with pytest.raises(InputError, match="NaN"):
        attach_dose_references(world.cat, "hn", world.refs)
    _save(_dose(0), folder / "dose.nii.gz")
    _save(np.zeros((8, 8, 5), np.uint8), folder / "SpinalCord.nii.gz")
    with pytest.raises(InputError, match=r"SpinalCord.*grid \[8, 8, 5\]"):
        attach_dose_references(world.cat, "hn", world.refs)
    _save(np.full(SHAPE, 2, np.uint8), folder / "SpinalCord.nii.gz")
    with pytest.raises(InputError, match="0/1 mask"):
        attach_dose_references(world.cat, "hn", world.refs)
    (folder / "SpinalCord.nii.gz").unlink()
    (folder / "possible_dose_mask.nii.gz").unlink()
    with pytest.raises(InputError, match="possible_dose_mask"):
        attach_dose_references(world.cat, "hn", world.refs)
    (world.refs / "nobody").mkdir()
    with pytest.raises(InputError, match="nobody"):
        attach_dose_references(world.cat, "hn", world.refs)
    with world.cat.sessions() as s:
        case = s.scalars(select(Case).where(Case.case_key == key)).one()
        assert sorted((o.role, o.digest) for o in case.objects) == before


def test_attach_dose_command(
    world: World, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`medarena datasets attach-dose` replaces a case's reference; a bad folder exits 2."""
    from typer.testing import CliRunner

    from medarena.cli.main import app

    point_cli_at(monkeypatch, world.cat, db_url)
    key = world.keys["train"][0]

    def dose_digest() -> str:
        with world.cat.sessions() as s:
            case = s.scalars(select(Case).where(Case.case_key == key)).one()
            return next(o.digest for o in case.objects if o.role == "dose")

    before = dose_digest()
    root = tmp_path / "again"
    shutil.copytree(world.refs / key, root / key)
    _save(_dose(0) * 0.5, root / key / "dose.nii.gz")
    res = CliRunner().invoke(app, ["datasets", "attach-dose", "hn", str(root)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())  # rich wraps long lines
    assert "1 case(s)" in out and "PTV70, SpinalCord" in out, out
    assert dose_digest() != before
    (root / key / "dose.nii.gz").unlink()
    res = CliRunner().invoke(app, ["datasets", "attach-dose", "hn", str(root)])
    assert res.exit_code == 2 and "dose.nii.gz" in res.output, res.output


def test_spec_metric_names_of_a_dose_track_are_checked() -> None:
    """The engine's names for the configured structures pass; typos and other ROIs do not."""
    from pydantic import ValidationError

    good = {**SPEC, "tracks": [{**SPEC["tracks"][0], "metrics": ["dvh_error/D_95/PTV70"]}]}
    assert ChallengeSpec.model_validate(good).tracks[0].metrics == ["dvh_error/D_95/PTV70"]
    for name, hint in (("dose_scor", "dose_score"), ("dvh_error/D_95/Brainstem", "PTV70")):
        bad = {**SPEC, "tracks": [{**SPEC["tracks"][0], "primary_metric": name}]}
        with pytest.raises(ValidationError) as info:
            ChallengeSpec.model_validate(bad)
        assert name in str(info.value) and hint in str(info.value), str(info.value)
