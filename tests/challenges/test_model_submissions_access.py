"""Hidden data never reaches participants: a phase that takes model submissions only never
gives them its hidden images; a training download leaves out another split's hidden cases.

The worker runs the team's model on the hidden subset; the team sees scores, never the
images (issue 5, item 4). A phase that also takes predictions keeps offering them (the team
must predict them), and reviewers keep their access.
"""

from __future__ import annotations

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from medarena.accounts.tokens import create_token
from medarena.challenges import data, service
from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.datasets.catalogue import Catalogue, case_records, make_split
from medarena.datasets.splits import SplitSpec
from medarena.db.platform_models import Challenge
from medarena.web.app import create_app


def _challenge(session: Session, spec: ChallengeSpec, make_user, kinds: list[str]) -> Challenge:
    raw = spec.model_dump(mode="json", exclude_unset=True)
    next(p for p in raw["phases"] if p["slug"] == "final")["submission_kinds"] = kinds
    spec = parse_spec(yaml.safe_dump(raw), "spec.yaml")
    org = make_user("org@example.org")
    return service.create_challenge(session, spec, actor_id=org.id)


def test_models_only_phase_refuses_its_hidden_inputs(
    session: Session, spec: ChallengeSpec, make_user
) -> None:
    ch = _challenge(session, spec, make_user, ["model"])
    alice = make_user("alice@example.org")
    service.join_challenge(session, ch, alice)
    with pytest.raises(service.PermissionDenied, match="model submissions only") as err:
        data.plan_download(session, ch, alice, "inputs", "seg", "final")
    assert "'final'" in str(err.value) and "'test'" in str(err.value)
    # the public preliminary subset stays downloadable; the organizer reads the hidden one
    assert data.plan_download(session, ch, alice, "inputs", "seg", "preliminary").entries
    admin = make_user("admin@example.org", admin=True)
    plan = data.plan_download(session, ch, admin, "inputs", "seg", "final")
    assert plan.hidden and plan.entries


def test_phase_taking_predictions_still_offers_its_hidden_inputs(
    session: Session, spec: ChallengeSpec, make_user
) -> None:
    ch = _challenge(session, spec, make_user, ["predictions", "model"])
    alice = make_user("alice@example.org")
    service.join_challenge(session, ch, alice)
    plan = data.plan_download(session, ch, alice, "inputs", "seg", "final")
    assert plan.hidden and plan.entries
    assert all(e.name.startswith("images/") for e in plan.entries)


def test_challenge_page_and_download_route_of_a_models_only_phase(
    catalogue: Catalogue, session: Session, spec_yaml: str, make_user
) -> None:
    marker = "    requires_phase: preliminary\n"
    assert marker in spec_yaml
    models_only = spec_yaml.replace(marker, marker + "    submission_kinds: [model]\n")
    headers = {}
    for name, admin in (("admin", True), ("ann", False)):
        _, plain = create_token(session, make_user(f"{name}@example.org", admin=admin), "t")
        headers[name] = {"Authorization": f"Bearer {plain}"}
    session.commit()
    with TestClient(create_app(catalogue.settings, catalogue)) as client:
        r = client.post(
            "/challenges-new",
            files={"spec_file": ("spec.yaml", models_only.encode(), "application/yaml")},
            headers=headers["admin"],
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        slug = r.headers["location"].rsplit("/", 1)[1]
        r = client.post(f"/challenges/{slug}/join", headers=headers["ann"], follow_redirects=False)
        assert r.status_code == 303
        page = client.get(f"/challenges/{slug}", headers=headers["ann"]).text
        assert "data/inputs?track=seg&amp;phase=preliminary" in page
        assert "phase=final" not in page
        final_inputs = f"/challenges/{slug}/data/inputs?track=seg&phase=final"
        r = client.get(final_inputs, headers=headers["ann"])
        assert r.status_code == 403 and "model submissions only" in r.text
        assert (
            client.get(
                f"/challenges/{slug}/data/inputs?track=seg&phase=preliminary",
                headers=headers["ann"],
            ).status_code
            == 200
        )
        admin_page = client.get(f"/challenges/{slug}", headers=headers["admin"]).text
        assert "data/inputs?track=seg&amp;phase=final" in admin_page


def test_dataset_preview_of_a_models_only_hidden_case_is_withheld(
    catalogue: Catalogue, session: Session, spec: ChallengeSpec, make_user
) -> None:
    ch = _challenge(session, spec, make_user, ["model"])
    ann = make_user("ann@example.org")
    admin = make_user("admin@example.org", admin=True)
    headers = {}
    for name, u in (("ann", ann), ("admin", admin)):
        headers[name] = {"Authorization": f"Bearer {create_token(session, u, 't')[1]}"}
    session.commit()
    recs = case_records(catalogue, "brain")
    test_key = next(r["case_key"] for r in recs if r["splits"]["challenge"] == "test")
    val_key = next(r["case_key"] for r in recs if r["splits"]["challenge"] == "validation")
    with TestClient(create_app(catalogue.settings, catalogue)) as client:
        url = f"/datasets/brain/cases/{test_key}/preview.png"
        for who in ({}, headers["ann"]):  # anonymous and a participant
            r = client.get(url, headers=who)
            assert r.status_code == 404 and "model submissions only" in r.text
            page = client.get(f"/datasets/brain/cases/{test_key}", headers=who).text
            assert "preview.png" not in page
        ok = client.get(url, headers=headers["admin"])
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
        # a public case, and the same hidden case once the phase takes predictions again
        assert client.get(f"/datasets/brain/cases/{val_key}/preview.png").status_code == 200
        raw = ch.spec | {
            "phases": [
                p | {"submission_kinds": ["predictions", "model"]} for p in ch.spec["phases"]
            ]
        }
        ch.spec = raw
        session.commit()
        assert client.get(url).status_code == 200


def test_training_download_leaves_out_cases_another_split_hides(
    catalogue: Catalogue, session: Session, spec: ChallengeSpec, make_user
) -> None:
    """A case in the challenge split's train subset that another split of the dataset hides
    (another challenge's test case) is not in the training zip: its labels are a secret."""
    make_split(
        catalogue,
        "brain",
        SplitSpec(name="other", ratios=(0.4, 0.2, 0.4), seed=7, group_by=None, hidden=("test",)),
    )
    recs = case_records(catalogue, "brain")
    train = {r["case_key"] for r in recs if r["splits"]["challenge"] == "train"}
    hidden_elsewhere = {r["case_key"] for r in recs if r["splits"]["other"] == "test"}
    assert train & hidden_elsewhere and train - hidden_elsewhere  # the seed makes both
    session.expire_all()
    ch = _challenge(session, spec, make_user, ["predictions"])
    alice = make_user("alice@example.org")
    service.join_challenge(session, ch, alice)
    plan = data.plan_download(session, ch, alice, "training", "seg")
    keys = {e.name.split("/")[-1].removesuffix(".nii.gz") for e in plan.entries}
    keys.discard("labels.csv")
    assert keys == train - hidden_elsewhere
