"""Challenge data: scored case ids and the downloads (training, inputs only, reference)."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.challenges import data, service
from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.datasets.catalogue import Catalogue, case_records
from medarena.db.platform_models import AuditEvent, Challenge, User
from medarena.errors import InputError


@pytest.fixture
def challenge(session: Session, spec: ChallengeSpec, make_user) -> Challenge:
    org = make_user("org@example.org")
    return service.create_challenge(session, spec, actor_id=org.id)


@pytest.fixture
def subsets(catalogue: Catalogue) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in case_records(catalogue, "brain"):
        out.setdefault(r["splits"]["challenge"], set()).add(r["case_key"])
    return out


def _unzip(catalogue: Catalogue, plan: data.DownloadPlan) -> dict[str, bytes]:
    blob = b"".join(data.stream_zip(catalogue.store, plan))
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.testzip() is None
        return {n: zf.read(n) for n in zf.namelist()}


def test_expected_case_ids_are_the_scored_subset(
    session: Session, spec: ChallengeSpec, subsets: dict[str, set[str]]
) -> None:
    assert {len(v) for v in subsets.values()} == {6, 2} and len(subsets["test"]) == 2
    prelim = data.expected_case_ids(session, spec, "seg", "preliminary")
    assert prelim == sorted(subsets["validation"])
    assert data.expected_case_ids(session, spec, "grade", "final") == sorted(subsets["test"])
    with pytest.raises(InputError, match="no such phase"):
        data.expected_case_ids(session, spec, "seg", "semi-final")


def test_training_download_has_train_images_labels_and_csv(
    session: Session,
    catalogue: Catalogue,
    challenge: Challenge,
    subsets: dict[str, set[str]],
    make_user,
) -> None:
    alice = make_user("alice@example.org")
    with pytest.raises(service.PermissionDenied, match="accept the rules"):
        data.plan_download(session, challenge, alice, "training", "seg")
    service.join_challenge(session, challenge, alice)
    plan = data.plan_download(session, challenge, alice, "training", "seg")
    assert plan.filename == "brain-2025-seg-training.zip" and not plan.hidden
    files = _unzip(catalogue, plan)
    train = sorted(subsets["train"])
    assert sorted(n for n in files if n.startswith("images/")) == [
        f"images/{k}.nii.gz" for k in train
    ]
    assert sorted(n for n in files if n.startswith("labels/")) == [
        f"labels/{k}.nii.gz" for k in train
    ]
    rows = list(csv.DictReader(io.StringIO(files["labels.csv"].decode())))
    assert [r["case_id"] for r in rows] == train
    # grade = case number mod 4, as written by the fixture.
    assert all(int(r["grade"]) == int(r["case_id"][4:]) % 4 for r in rows)
    recs = {r["case_key"]: r for r in case_records(catalogue, "brain")}
    label_digest = next(o["digest"] for o in recs[train[0]]["objects"] if o["role"] == "label")
    assert files[f"labels/{train[0]}.nii.gz"] == catalogue.store.get_bytes(label_digest)


def test_inputs_of_hidden_subset_are_images_only(
    session: Session,
    catalogue: Catalogue,
    challenge: Challenge,
    subsets: dict[str, set[str]],
    make_user,
) -> None:
    alice = make_user("alice@example.org")
    service.join_challenge(session, challenge, alice)
    plan = data.plan_download(session, challenge, alice, "inputs", "grade", "final")
    assert plan.hidden
    files = _unzip(catalogue, plan)
    assert sorted(files) == [f"images/{k}.nii.gz" for k in sorted(subsets["test"])]
    # No label object of a test case hides under another name either.
    recs = {r["case_key"]: r for r in case_records(catalogue, "brain")}
    label_bytes = {
        catalogue.store.get_bytes(o["digest"])
        for k in subsets["test"]
        for o in recs[k]["objects"]
        if o["role"] == "label"
    }
    assert label_bytes and not label_bytes & set(files.values())
    assert session.scalars(select(AuditEvent.action)).all() == ["challenge.create"]


def test_hidden_labels_refused_to_participants_and_audited_for_organizers(
    session: Session,
    catalogue: Catalogue,
    challenge: Challenge,
    subsets: dict[str, set[str]],
    make_user,
) -> None:
    alice = make_user("alice@example.org")
    service.join_challenge(session, challenge, alice)
    with pytest.raises(service.PermissionDenied, match="organizers and reviewers only"):
        data.plan_download(session, challenge, alice, "reference", "seg", "final")
    org = session.scalars(select(User).where(User.email == "org@example.org")).one()
    # Reading the public validation reference is not audited; the hidden test one is.
    data.plan_download(session, challenge, org, "reference", "seg", "preliminary")
    plan = data.plan_download(session, challenge, org, "reference", "seg", "final")
    session.commit()
    files = _unzip(catalogue, plan)
    assert sorted(files) == sorted(["labels.csv", *(f"labels/{k}.nii.gz" for k in subsets["test"])])
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "data.hidden_read")
    ).all()
    assert len(events) == 1
    assert (events[0].actor_user_id, events[0].target) == (org.id, "brain/challenge/test")


def test_training_download_of_hidden_subset_refused(
    session: Session, spec_yaml: str, make_user
) -> None:
    # A spec that passes validation but names the hidden subset for training is refused
    # at create time (check_data), and again at download time if it were stored anyway.
    text = spec_yaml.replace(
        "    split: challenge\n",
        "    split: challenge\n    train_subset: test\n    reference_subset: validation\n",
    )
    spec = parse_spec(text)
    with pytest.raises(InputError, match="never downloadable"):
        service.create_challenge(session, spec, actor_id=None)
    ch = Challenge(slug=spec.slug, title=spec.title, spec=spec.model_dump(mode="json"))
    session.add(ch)
    session.flush()
    bob = make_user("bob@example.org")
    service.join_challenge(session, ch, bob)
    with pytest.raises(service.PermissionDenied, match="never downloadable"):
        data.plan_download(session, ch, bob, "training", "seg")


def test_unknown_kind_and_missing_phase(session: Session, challenge: Challenge, make_user) -> None:
    alice = make_user("alice@example.org")
    service.join_challenge(session, challenge, alice)
    with pytest.raises(InputError, match="download kind must be one of"):
        data.plan_download(session, challenge, alice, "everything", "seg")
    with pytest.raises(InputError, match="names a phase"):
        data.plan_download(session, challenge, alice, "inputs", "seg")


def test_stream_zip_yields_bounded_chunks(catalogue: Catalogue, tmp_path) -> None:
    big = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB, not a multiple of the chunk size
    digest = catalogue.store.put_bytes(big)
    plan = data.DownloadPlan(
        "x.zip", [data.ZipEntry("a.bin", digest), data.ZipEntry("b.txt", data=b"hello")]
    )
    chunks = list(data.stream_zip(catalogue.store, plan))
    assert max(len(c) for c in chunks) <= (1 << 20) + 1024 and len(chunks) >= 3
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.read("a.bin") == big and zf.read("b.txt") == b"hello"
