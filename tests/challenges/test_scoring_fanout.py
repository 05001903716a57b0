"""Scoring fans an image task's cases out to a Dask LocalCluster and gets the local result."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medarena.challenges.data import subset_cases
from medarena.challenges.scoring import HANDLERS, evaluate_cases
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.submissions import submit
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import (
    Challenge,
    RulesAcceptance,
    Submission,
    Team,
    TeamMember,
    User,
)
from medarena.evaluation.results import EvaluationResult
from medarena.jobs import Worker


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[object]:
    """Two worker processes; scheduler and workers listen on 127.0.0.1 only."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    ) as cluster:
        yield cluster


def _setup(cat: Catalogue, spec: ChallengeSpec) -> tuple[int, dict[str, bytes]]:
    data = spec.model_dump(mode="json")
    data["tracks"][0].update(primary_metric="tumour/dice", metrics=["tumour/dice"])
    data["tracks"][0]["task_config"]["metrics"] = ["dice", "hd95"]
    with cat.sessions() as s, s.begin():
        ch = Challenge(slug=spec.slug, title=spec.title, spec=data)
        u = User(email="ada@example.org", display_name="ada", password_hash="x")
        s.add_all([ch, u])
        s.flush()
        t = Team(challenge_id=ch.id, name="ada-team")
        s.add(t)
        s.flush()
        s.add(TeamMember(team_id=t.id, challenge_id=ch.id, user_id=u.id, is_captain=True))
        s.add(RulesAcceptance(challenge_id=ch.id, user_id=u.id, spec_revision=1))
        labels = {
            c.case_key: cat.store.get_bytes(next(o.digest for o in c.objects if o.role == "label"))
            for c in subset_cases(s, "brain", "challenge", "validation")
        }
        return u.id, labels


def _archive(tmp: Path, labels: dict[str, bytes]) -> bytes:
    """First case exact, second shifted by one voxel (dice and HD95 strictly between)."""
    first, second = sorted(labels)
    (tmp / "in.nii.gz").write_bytes(labels[second])
    img = nib.nifti1.load(tmp / "in.nii.gz")
    shifted = np.roll(np.asarray(img.dataobj), 1, axis=1).astype(np.uint8)
    nib.save(nib.Nifti1Image(shifted, img.affine), tmp / "out.nii.gz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{first}.nii.gz", labels[first])
        zf.writestr(f"{second}.nii.gz", (tmp / "out.nii.gz").read_bytes())
    return buf.getvalue()


def _submit(cat: Catalogue, uid: int, data: bytes) -> int:
    return submit(
        cat.sessions,
        cat.store,
        challenge_slug="brain-2025",
        track_slug="seg",
        phase_slug="preliminary",
        user_id=uid,
        stream=io.BytesIO(data),
        filename="preds.zip",
        work_dir=Path(cat.settings.data_dir) / "work",
    ).id


def _result(cat: Catalogue, sub_id: int) -> EvaluationResult:
    with cat.sessions() as s:
        sub = s.get(Submission, sub_id)
        assert sub is not None and sub.status == "scored", sub and sub.error
        return EvaluationResult.model_validate_json(cat.store.get_bytes(sub.result_digest or ""))


def test_dask_scoring_equals_local_scoring(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path, dask_cluster: object
) -> None:
    uid, labels = _setup(catalogue, spec)
    data = _archive(tmp_path, labels)
    local_id = _submit(catalogue, uid, data)
    assert Worker(catalogue.sessions, HANDLERS, settings=catalogue.settings).run_until_idle() == 1
    dask_id = _submit(catalogue, uid, data)
    address = dask_cluster.scheduler_address  # type: ignore[attr-defined]
    assert address.startswith("tcp://127.0.0.1:")
    on_dask = catalogue.settings.model_copy(update={"dask_address": address})
    assert Worker(catalogue.sessions, HANDLERS, settings=on_dask).run_until_idle() == 1
    local, fanned = _result(catalogue, local_id), _result(catalogue, dask_id)
    assert fanned.model_dump() == local.model_dump()
    first, second = sorted(labels)
    assert local.cases[first]["tumour/dice"] == 1.0
    assert 0.0 < local.cases[second]["tumour/dice"] < 1.0
    # the cases really ran as tasks on the cluster
    assert "score_case" in dask_cluster.scheduler.task_prefixes  # type: ignore[attr-defined]


def test_missing_case_gets_the_same_worst_values_on_dask(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path, dask_cluster: object
) -> None:
    _, labels = _setup(catalogue, spec)
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for k, v in labels.items():
        (ref / f"{k}.nii.gz").write_bytes(v)
    first = sorted(labels)[0]
    (pred / f"{first}.nii.gz").write_bytes(labels[first])
    cfg = {"labels": {"tumour": 1}, "metrics": ["dice", "hd95"]}
    address = dask_cluster.scheduler_address  # type: ignore[attr-defined]
    local = evaluate_cases("segmentation", ref, pred, cfg)
    fanned = evaluate_cases("segmentation", ref, pred, cfg, dask_address=address)
    assert fanned.model_dump() == local.model_dump()
    assert (
        fanned.missing == sorted(labels)[1:]
        and fanned.cases[sorted(labels)[1]]["tumour/dice"] == 0.0
    )
