"""A submission is never "scored" without its primary metric (image-to-image and SSIM's window).

The tiny 'brain' cases are 6x5x4 voxels: every slice is smaller than SSIM's 7x7 window,
so an image-to-image track on them cannot score any case.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from track_helpers import add_team_member, score_all, submit_bytes

from medarena.challenges import service
from medarena.challenges.data import subset_cases
from medarena.challenges.spec import ChallengeSpec
from medarena.datasets.catalogue import Catalogue
from medarena.db.models import Case
from medarena.db.platform_models import Challenge, Job, Submission
from medarena.errors import InputError


def _image_to_image(spec: ChallengeSpec, **task_config: Any) -> ChallengeSpec:
    """The small spec with its first track turned into an image-to-image track (SSIM primary)."""
    data = spec.model_dump(mode="json")
    data["tracks"][0].update(
        {
            "task": "image-to-image",
            "task_config": task_config,
            "metrics": ["ssim", "psnr"],
            "primary_metric": "ssim",
        }
    )
    return ChallengeSpec.model_validate(data)


def test_no_primary_score_fails_the_submission_naming_metric_and_cases(
    catalogue: Catalogue, spec: ChallengeSpec
) -> None:
    # Stored as it was before the spec-time check (or with data changed since): no check.
    i2i = _image_to_image(spec)
    with catalogue.sessions() as s, s.begin():
        ch = Challenge(slug=i2i.slug, title=i2i.title, spec=i2i.model_dump(mode="json"))
        s.add(ch)
        s.flush()
        uid = add_team_member(s, ch, "ada@example.org", "ada-team")
        refs = {
            c.case_key: catalogue.store.get_bytes(
                next(o.digest for o in c.objects if o.role == "label")
            )
            for c in subset_cases(s, "brain", "challenge", "validation")
        }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, data in refs.items():  # the reference itself: a perfect prediction
            zf.writestr(f"{key}.nii.gz", data)
    sid = submit_bytes(catalogue, uid, i2i.slug, "seg", "preliminary", buf.getvalue(), "p.zip")
    assert score_all(catalogue) == 1
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None
        assert sub.status == "failed", (sub.status, sub.scores)
        assert sub.primary_score is None and not sub.scores and sub.result_digest is None
        assert sub.counts_toward_limit is False  # the track's data may be the cause
        error = sub.error or ""
        assert "primary metric 'ssim'" in error and "no score" in error
        assert f"{len(refs)} case(s) failed" in error
        for key in refs:
            assert key in error
        assert "7x7" in error
        job = s.scalars(select(Job)).one()
        assert job.state == "failed" and job.attempts == 1  # not retried


def test_spec_with_slices_smaller_than_the_ssim_window_is_refused(
    session: Session, spec: ChallengeSpec
) -> None:
    i2i = _image_to_image(spec)
    problems = service.check_data(session, i2i)
    ssim = [p for p in problems if "SSIM" in p]
    # once per scored subset (validation, test), never for the training subset
    assert len(ssim) == 2, problems
    assert all(p.startswith("track seg: SSIM needs 2-D slices of at least 7x7") for p in ssim)
    assert any("subset 'validation'" in p and "6x5" in p for p in ssim)
    assert not any("subset 'train'" in p for p in ssim)
    with pytest.raises(InputError, match="SSIM needs 2-D slices"):
        service.create_challenge(session, i2i, actor_id=None)
    session.rollback()
    assert session.scalars(select(Challenge)).all() == []
    # Slices of 8x8 fit the window; the same shapes sliced along another axis do not.
    session.execute(update(Case).values(shape=[8, 8, 4]))
    assert service.check_data(session, i2i) == []
    problems = service.check_data(session, _image_to_image(spec, slice_axis=0))
    assert any("8x4" in p and "slice_axis 0" in p for p in problems), problems
