"""The scoring job on real NIfTI data: scored once, fenced, reference never named to the team."""

from __future__ import annotations

import io
import math
import time
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select, update

from medarena.challenges.data import subset_cases
from medarena.challenges.scoring import HANDLERS, score_submission
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.submissions import (
    SCORE_JOB_KIND,
    SubmissionRefused,
    submission_detail,
    submission_status,
    submit,
)
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import (
    Challenge,
    Job,
    RulesAcceptance,
    Submission,
    Team,
    TeamMember,
    User,
)
from medarena.evaluation.results import EvaluationResult
from medarena.jobs import JobContext, LeaseLost, Worker, claim, enqueue


def _setup(cat: Catalogue, spec: ChallengeSpec, **seg: Any) -> tuple[int, dict[str, bytes]]:
    """Challenge, one team with one member; the validation cases' label maps by case key.

    ``seg`` overrides fields of the first track.
    """
    data = spec.model_dump(mode="json")
    # the engine names a structure's metric "<structure>/<metric>"
    data["tracks"][0].update({"primary_metric": "tumour/dice", "metrics": ["tumour/dice"], **seg})
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
        uid = u.id
        labels = {
            c.case_key: cat.store.get_bytes(next(o.digest for o in c.objects if o.role == "label"))
            for c in subset_cases(s, "brain", "challenge", "validation")
        }
    return uid, labels


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _nifti(tmp: Path, arr: np.ndarray) -> bytes:
    path = tmp / "x.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path.read_bytes()


def _submit(cat: Catalogue, uid: int, data: bytes) -> int:
    sub = submit(
        cat.sessions,
        cat.store,
        challenge_slug="brain-2025",
        track_slug="seg",
        phase_slug="preliminary",
        user_id=uid,
        stream=io.BytesIO(data),
        filename="preds.zip",
        work_dir=Path(cat.settings.data_dir) / "work",
    )
    return sub.id


def _worker(cat: Catalogue) -> Worker:
    return Worker(cat.sessions, HANDLERS, settings=cat.settings, lease_seconds=30)


def test_perfect_and_partial_predictions_are_scored(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid, labels = _setup(catalogue, spec)
    assert len(labels) == 2
    perfect = _submit(catalogue, uid, _zip({f"{k}.nii.gz": v for k, v in labels.items()}))
    first, second = sorted(labels)
    empty = _nifti(tmp_path, np.zeros((6, 5, 4), np.uint8))
    half = _submit(
        catalogue, uid, _zip({f"{first}.nii.gz": labels[first], f"{second}.nii.gz": empty})
    )
    assert _worker(catalogue).run_until_idle() == 2
    with catalogue.sessions() as s:
        a, b = s.get(Submission, perfect), s.get(Submission, half)
        assert a is not None and b is not None
        assert (a.status, a.primary_score, a.score_revision) == ("scored", 1.0, 1)
        # dice 1 on one case, 0 on the other (empty prediction, non-empty reference)
        assert b.status == "scored" and b.primary_score == pytest.approx(0.5)
        res = EvaluationResult.model_validate_json(catalogue.store.get_bytes(b.result_digest or ""))
        assert res.cases[second]["tumour/dice"] == 0.0
        assert submission_status(s, b).as_dict()["progress"] == 1.0
        jobs = s.scalars(select(Job)).all()
        assert {j.state for j in jobs} == {"done"}


def test_bad_label_values_and_shapes_refused_before_queueing(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid, labels = _setup(catalogue, spec)
    first, second = sorted(labels)
    seven = np.zeros((6, 5, 4), np.uint8)
    seven[0, 0, 0] = 7
    wrong_shape = np.zeros((6, 5, 3), np.uint8)
    data = _zip(
        {f"{first}.nii.gz": _nifti(tmp_path, seven), f"{second}.nii": b"not a nifti at all"}
    )
    with pytest.raises(SubmissionRefused) as info:
        _submit(catalogue, uid, data)
    text = " ".join(info.value.problems)
    assert "label values [7] are not allowed" in text and "not a readable NIfTI" in text
    data = _zip(
        {f"{first}.nii.gz": _nifti(tmp_path, wrong_shape), f"{second}.nii.gz": labels[second]}
    )
    with pytest.raises(SubmissionRefused, match=r"shape \[6, 5, 3\] differs"):
        _submit(catalogue, uid, data)
    with catalogue.sessions() as s:
        assert s.scalars(select(Submission)).all() == []


def test_scored_exactly_once_when_a_lease_is_lost(
    catalogue: Catalogue, spec: ChallengeSpec
) -> None:
    uid, labels = _setup(catalogue, spec)
    sid = _submit(catalogue, uid, _zip({f"{k}.nii.gz": v for k, v in labels.items()}))
    stale = claim(catalogue.sessions, "w-stale", [SCORE_JOB_KIND], 0.05)
    assert stale is not None
    time.sleep(0.2)  # the stale worker's lease runs out; another worker takes the job over
    fresh = claim(catalogue.sessions, "w-fresh", [SCORE_JOB_KIND], 30)
    assert fresh is not None and fresh.attempt == 2
    with pytest.raises(LeaseLost):
        score_submission(JobContext(stale, catalogue.sessions, catalogue.settings))
    out = score_submission(JobContext(fresh, catalogue.sessions, catalogue.settings))
    assert out["submission_id"] == sid
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "scored"
        scored_at = sub.scored_at
        # a second job for the same spec revision (e.g. enqueued twice) changes nothing
        enqueue(s, SCORE_JOB_KIND, {"submission_id": sid, "spec_revision": 1})
        s.commit()
    assert _worker(catalogue).run_until_idle() == 1
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.scored_at == scored_at
        last = s.scalars(select(Job).order_by(Job.id.desc())).first()
        assert last is not None and "skipped" in last.result


def test_infinite_and_undefined_scores_are_stored(
    catalogue: Catalogue, spec: ChallengeSpec
) -> None:
    """Aggregate means may be inf (PSNR of a perfect image-to-image prediction: MSE 0) or
    NaN (no case defines the metric). The scores column keeps them on each backend, though
    PostgreSQL's json type has no Infinity or NaN token, and the API shows them as text."""
    uid, labels = _setup(catalogue, spec)
    sid = _submit(catalogue, uid, _zip({f"{k}.nii.gz": v for k, v in labels.items()}))
    assert _worker(catalogue).run_until_idle() == 1
    scores = {"psnr": math.inf, "low": -math.inf, "undefined": math.nan, "nmse": 0.0}
    with catalogue.sessions() as s, s.begin():  # as the scoring job writes them
        s.execute(
            update(Submission)
            .where(Submission.id == sid)
            .values(scores=scores, primary_score=math.inf)
        )
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        user = s.get(User, uid)
        assert sub is not None and user is not None
        assert sub.primary_score == math.inf
        assert {k: v for k, v in sub.scores.items() if k != "undefined"} == {
            "psnr": math.inf,
            "low": -math.inf,
            "nmse": 0.0,
        }
        assert math.isnan(sub.scores["undefined"])
        shown = submission_detail(s, catalogue.store, sub, user)
        assert shown["scores"] == {"psnr": "inf", "low": "-inf", "undefined": "nan", "nmse": 0.0}
        assert shown["primary_score"] == "inf"


def test_handler_registry_names_the_kind() -> None:
    handlers: dict[str, Any] = dict(HANDLERS)
    assert handlers == {SCORE_JOB_KIND: score_submission}
