"""A real challenge world for the authorization sweep, and the secrets it holds.

Built on the challenge tests' catalogue (dataset ``brain``, split ``challenge`` with a
hidden ``test`` subset) and spec (tracks ``seg`` and ``grade``; phase ``preliminary``
scores the public ``validation`` subset on a public board, phase ``final`` scores the
hidden ``test`` subset on a board private until close), plus a phase ``semifinal`` (track
``grade``, ``validation`` subset) whose board is hidden. An organizer (not a platform
admin: the role is what grants access), team A (ann) and team B (ben), each with scored
submissions to every track of every phase, uploaded through the API and scored by a real
worker, so result files, stored archives, per-case results and boards exist; C, who joined
but is in no team; D, the organizer of another challenge on the same dataset.

Secrets are sentinels chosen to be unique in any response body:

- grade labels and per-case errors are multiples of 1/64 (|prediction - label| is then
  exact) with at least four significant digits, so ``repr`` and ``%.4g`` renderings
  (JSON, CSV, the leaderboard page) are both distinctive;
- segmentation predictions add k extra voxels (k odd, never one three times another) to
  the reference, so each case's Dice 2n / (2n + k) is a distinct long decimal;
- hidden reference label files are searched by their bytes and object digests, and their
  slices as the viewer's reference-overlay PNGs;
- every case also carries detection findings (role ``findings``); a hidden case's nodule
  has a distinctive x coordinate, searched with the findings object's digest.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from medarena.accounts.tokens import create_token
from medarena.challenges import service, teams, viewer
from medarena.challenges.scoring import HANDLERS
from medarena.challenges.spec import parse_spec
from medarena.datasets.catalogue import Catalogue
from medarena.datasets.findings import FINDINGS_ROLE, attach_findings
from medarena.db.lab_models import LabModel, LabRun
from medarena.db.models import Case, Split, SplitAssignment
from medarena.db.platform_models import Submission, User
from medarena.evaluation.results import EvaluationResult
from medarena.jobs import Worker
from medarena.web.app import create_app
from medarena.web.deps import ANON_CSRF_COOKIE, CSRF_HEADER

SLUG = "brain-2025"
OTHER_SLUG = "other-2025"
PHASES = ("preliminary", "semifinal", "final")
# Added to the challenge tests' spec: a phase whose board only organizers ever see.
HIDDEN_BOARD_PHASE = """\
  - slug: semifinal
    title: Semi-final
    opens: 2020-01-01T00:00:00Z
    closes: 2099-01-01T00:00:00Z
    scored_subset: validation
    leaderboard: hidden
    tracks: [grade]
"""
SUBSET_OF_PHASE = {"preliminary": "validation", "semifinal": "validation", "final": "test"}
PRIVATE_BOARDS = ("semifinal", "final")
TRACKS = ("seg", "grade")
DATASET = "brain"
# grade labels: the hidden ones are the secret; the others only need to differ from them
HIDDEN_GRADES = (913.4375, 871.8125)
PUBLIC_GRADES = (402.5625, 388.6875)
# per-case absolute errors of each team's grade predictions, per phase (2 cases each)
GRADE_ERRORS = {
    ("A", "preliminary"): (17.390625, 23.828125),
    ("A", "semifinal"): (9.140625, 27.765625),
    ("A", "final"): (31.171875, 44.859375),
    ("B", "preliminary"): (12.984375, 15.734375),
    ("B", "semifinal"): (33.546875, 40.296875),
    ("B", "final"): (52.421875, 61.546875),
}
# extra voxels of each team's segmentation per phase and case: odd, no k and 3k pair
EXTRA_VOXELS = {
    ("A", "preliminary"): (1, 5),
    ("A", "final"): (7, 11),
    ("B", "preliminary"): (13, 17),
    ("B", "final"): (19, 23),
}
LABELLED_SLICE = 1  # axis-2 index where every reference label map has voxels


@dataclass
class Caller:
    """Someone the sweep calls as: bearer headers (none for anonymous) and what it owns."""

    name: str
    headers: dict[str, str]
    user_id: int | None = None
    team_id: int | None = None
    spare_token_id: int | None = None  # a token the sweep may revoke without locking it out
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class Secrets:
    """Byte strings that must not reach some callers, each with a label for the report."""

    items: dict[bytes, str] = field(default_factory=dict)

    def add(self, what: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        assert len(data) >= 5, f"sentinel {what} is too short to be unique: {data!r}"
        self.items[data] = what

    def add_number(self, what: str, v: float) -> None:
        self.add(what, repr(v))
        short = f"{v:.4g}"
        if len(short) >= 5 and short != repr(v):
            self.add(f"{what} (%.4g)", short)


@dataclass
class World:
    """The built world: client, callers, path-parameter values and the secrets."""

    client: TestClient
    catalogue: Catalogue
    callers: dict[str, Caller]
    case_keys: dict[str, list[str]]  # subset -> case keys
    submissions: dict[tuple[str, str, str], int]  # (team, phase, track) -> id
    invitation_tokens: dict[str, str]  # team -> plain token
    invitation_ids: dict[str, int]
    hidden: Secrets  # nobody but organizers: hidden labels, hidden per-case results
    private: dict[str, Secrets]  # team -> its results and files, hidden from others
    hidden_pngs: dict[bytes, str]  # reference-overlay slices of hidden cases
    team_visible: dict[str, set[bytes]]  # team -> values it legitimately sees
    spec_yaml: str
    upload: bytes  # a valid preliminary/grade archive, for the write sweep
    lab_runs: dict[str, int] = field(default_factory=dict)  # caller -> a lab run it owns
    lab_models: list[str] = field(default_factory=list)  # registry refs (A's run's model)

    def forbidden(self, caller: str) -> dict[bytes, str]:
        """Sentinels the caller must never receive."""
        return forbidden_for(self.hidden, self.private, caller)


def forbidden_for(hidden: Secrets, private: dict[str, Secrets], caller: str) -> dict[bytes, str]:
    """Hidden secrets and other teams' private ones; nothing for organizers."""
    if caller == "organizer":
        return {}
    out = dict(hidden.items)
    for team, secrets in private.items():
        if caller != team:
            out.update(secrets.items)
    return out


def _grades(cat: Catalogue) -> dict[str, list[str]]:
    """Give every case a grade (hidden ones distinctive); return case keys per subset."""
    keys: dict[str, list[str]] = {}
    with cat.sessions() as s, s.begin():
        rows = s.execute(
            select(Case, SplitAssignment.subset)
            .join(SplitAssignment, SplitAssignment.case_id == Case.id)
            .join(Split, Split.id == SplitAssignment.split_id)
            .where(Split.name == "challenge")
            .order_by(Case.case_key)
        ).all()
        for case, subset in rows:
            keys.setdefault(subset, []).append(case.case_key)
            i = len(keys[subset]) - 1
            if subset == "test":
                grade = HIDDEN_GRADES[i]
                _distinctive_label(cat, case, i)
            elif subset == "validation":
                grade = PUBLIC_GRADES[i]
            else:
                grade = 100.0 + i
            case.labels = {**case.labels, "grade": grade}
    assert len(keys["test"]) == 2 and len(keys["validation"]) == 2, keys
    return keys


def _distinctive_label(cat: Catalogue, case: Case, i: int) -> None:
    """Replace a hidden case's label map by a pattern no other case has (a staircase)."""
    (obj,) = [o for o in case.objects if o.role == "label"]
    ref = nib.Nifti1Image.from_bytes(gzip.decompress(cat.store.get_bytes(obj.digest)))
    lab = np.zeros(ref.shape, np.uint8)
    for step in range(3 + i):
        lab[step % ref.shape[0], : 1 + step % ref.shape[1], LABELLED_SLICE] = 1
    data = gzip.compress(nib.Nifti1Image(lab, ref.affine).to_bytes(), mtime=0)
    obj.digest, obj.size = cat.store.put_bytes(data), len(data)


def _label_digests(cat: Catalogue, case_keys: Iterable[str]) -> dict[str, str]:
    with cat.sessions() as s:
        out: dict[str, str] = {}
        for case in s.scalars(select(Case).where(Case.case_key.in_(list(case_keys)))):
            (digest,) = [o.digest for o in case.objects if o.role == "label"]
            out[case.case_key] = digest
        return out


def _nifti(cat: Catalogue, digest: str, work: Path) -> Path:
    path = work / f"{digest}.nii.gz"
    if not path.exists():
        shutil.copyfile(cat.store.path_of(digest), path)
    return path


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _seg_archive(
    cat: Catalogue, labels: dict[str, str], keys: list[str], extra: tuple[int, ...], work: Path
) -> bytes:
    members = {}
    for key, k in zip(keys, extra, strict=True):
        ref = nib.nifti1.load(_nifti(cat, labels[key], work))
        pred = np.asarray(ref.dataobj).astype(np.uint8)
        free = np.argwhere(pred == 0)[:k]
        pred[tuple(free.T)] = 1
        members[f"{key}.nii"] = nib.Nifti1Image(pred, ref.affine).to_bytes()
    return _zip(members)


def _grade_archive(grades: dict[str, float], keys: list[str], errors: tuple[float, ...]) -> bytes:
    rows = ["case_id,grade"] + [
        f"{key},{grades[key] + e!r}" for key, e in zip(keys, errors, strict=True)
    ]
    return _zip({"grade.csv": ("\n".join(rows) + "\n").encode()})


def _attach_findings(cat: Catalogue, case_keys: dict[str, list[str]], work: Path) -> dict[str, str]:
    """Detection findings for every case (datasets.findings); the hidden cases' as secrets.

    A hidden case's nodule sits at a distinctive x (a multiple of 1/64 with 7 digits).
    """
    rows = ["case_id,x,y,z,diameter_mm"]
    secrets: dict[str, str] = {}
    for subset, keys in case_keys.items():
        for i, key in enumerate(keys):
            x = 917.3125 + i if subset == "test" else 11.5 + i
            rows.append(f"{key},{x!r},20.0,30.0,7.25")
            if subset == "test":
                secrets[f"hidden nodule x of {key}"] = repr(x)
    path = work / "annotations.csv"
    path.write_text("\n".join(rows) + "\n")
    attach_findings(cat, DATASET, path)
    with cat.sessions() as s:
        for c in s.scalars(select(Case).where(Case.case_key.in_(case_keys["test"]))):
            (o,) = (o for o in c.objects if o.role == FINDINGS_ROLE)
            secrets[f"hidden findings digest of {c.case_key}"] = o.digest
    return secrets


def build_world(cat: Catalogue, spec_yaml: str, work: Path) -> World:
    """Create the challenge, users, teams, invitations, tokens and scored submissions."""
    work.mkdir(parents=True, exist_ok=True)
    spec_yaml = spec_yaml.replace("  - slug: final\n", HIDDEN_BOARD_PHASE + "  - slug: final\n")
    assert "semifinal" in spec_yaml
    case_keys = _grades(cat)
    callers: dict[str, Caller] = {"anonymous": Caller("anonymous", {})}
    emails: dict[str, list[str]] = {}
    with cat.sessions() as s, s.begin():
        users = {}
        people = (("organizer", "olga"), ("A", "ann"), ("B", "ben"), ("C", "cid"), ("D", "dora"))
        for name, email in people:
            u = User(email=f"{email}@example.org", display_name=email, password_hash="x")
            s.add(u)
            s.flush()
            users[name] = u
        ch = service.create_challenge(
            s, parse_spec(spec_yaml, "spec.yaml"), actor_id=users["organizer"].id
        )
        # D organizes another challenge (on the same dataset): no role in this one
        other = spec_yaml.replace(f"slug: {SLUG}", f"slug: {OTHER_SLUG}")
        service.create_challenge(s, parse_spec(other, "other.yaml"), actor_id=users["D"].id)
        invitation_tokens, invitation_ids = {}, {}
        for name, u in users.items():
            _, plain = create_token(s, u, "main")
            spare, _ = create_token(s, u, "spare")
            caller = Caller(name, {"Authorization": f"Bearer {plain}"}, u.id, None, spare.id)
            if name in ("A", "B", "C"):
                service.join_challenge(s, ch, u)
            if name in ("A", "B"):  # C has joined but is in no team
                row = teams.create_team(s, ch, u, f"Team {name}")
                inv, token = teams.invite(s, ch, row, u, f"guest-of-{name.lower()}@example.org")
                invitation_tokens[name], invitation_ids[name] = token, inv.id
                emails[name] = [u.email, inv.email]
                caller.team_id = row.id
            callers[name] = caller
    client = TestClient(create_app(cat.settings, cat), raise_server_exceptions=False)
    # Anonymous holds the pre-login CSRF cookie and token a browser gets from /login, so
    # its page forms pass the CSRF check and meet the authorization checks behind it.
    r = client.get("/login")
    m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert r.status_code == 200 and m, r.text
    callers["anonymous"] = Caller(
        "anonymous",
        {CSRF_HEADER: m.group(1)},
        cookies={ANON_CSRF_COOKIE: client.cookies[ANON_CSRF_COOKIE]},
    )

    with cat.sessions() as s:
        grades = {c.case_key: float(c.labels["grade"]) for c in s.scalars(select(Case))}
    labels = _label_digests(cat, case_keys["validation"] + case_keys["test"])
    submissions: dict[tuple[str, str, str], int] = {}
    worker = Worker(cat.sessions, HANDLERS, settings=cat.settings)
    for phase in PHASES:  # final needs a scored preliminary submission first
        keys = case_keys[SUBSET_OF_PHASE[phase]]
        for team in ("A", "B"):
            archives = {"grade": _grade_archive(grades, keys, GRADE_ERRORS[team, phase])}
            if (team, phase) in EXTRA_VOXELS:
                archives["seg"] = _seg_archive(cat, labels, keys, EXTRA_VOXELS[team, phase], work)
            for track, body in archives.items():
                r = client.post(
                    f"/api/v1/challenges/{SLUG}/submissions",
                    params={"phase": phase, "track": track, "filename": f"{team}-{track}.zip"},
                    content=body,
                    headers=callers[team].headers,
                )
                assert r.status_code == 201, r.text
                submissions[team, phase, track] = r.json()["id"]
        worker.run_until_idle()

    hidden, private = Secrets(), {"A": Secrets(), "B": Secrets()}
    team_visible: dict[str, set[bytes]] = {"A": set(), "B": set()}
    for i, key in enumerate(case_keys["test"]):
        hidden.add_number(f"hidden label grade of {key}", HIDDEN_GRADES[i])
        hidden.add(f"hidden label file digest of {key}", labels[key])
        hidden.add(f"hidden label file bytes of {key}", cat.store.get_bytes(labels[key]))
    for what, value in _attach_findings(cat, case_keys, work).items():
        hidden.add(what, value)
    archive_digests: dict[int, str] = {}
    prediction_pngs: dict[bytes, str] = {}
    with cat.sessions() as s:
        for (team, phase, track), sid in submissions.items():
            sub = s.get(Submission, sid)
            assert sub is not None and sub.status == "scored", (team, phase, track, sub)
            archive_digests[sid] = sub.archive_digest
            assert sub.result_digest is not None
            mine = private[team]
            what = f"team {team} {phase}/{track} submission {sid}"
            mine.add(f"archive digest of {what}", sub.archive_digest)
            mine.add(f"archive bytes of {what}", cat.store.get_bytes(sub.archive_digest))
            mine.add(f"result digest of {what}", sub.result_digest)
            result = EvaluationResult.model_validate_json(cat.store.get_bytes(sub.result_digest))
            assert sorted(result.cases) == case_keys[SUBSET_OF_PHASE[phase]], result.cases
            for key, vals in result.cases.items():
                for metric, v in vals.items():
                    if len(repr(v)) < 8:
                        continue  # too short to be unique (e.g. a Dice of 0.8)
                    label = f"per-case {metric} of {key} in {what}"
                    if phase == "final":  # the hidden test subset: organizers only
                        hidden.add_number(label, v)
                    else:
                        mine.add_number(label, v)
                        team_visible[team].add(repr(v).encode())
            if phase in PRIVATE_BOARDS:
                # the team's own score on a board private until close, or hidden
                assert sub.primary_score is not None
                mine.add_number(f"private-board score of {what}", sub.primary_score)
                team_visible[team].add(repr(sub.primary_score).encode())
    for team in ("A", "B"):
        for email in emails[team]:  # members' and invited addresses
            private[team].add(f"e-mail address known to team {team}", email)
        for phase in PHASES:
            errors = GRADE_ERRORS[team, phase]
            known = set(hidden.items) | set(private[team].items)
            assert {repr(e).encode() for e in errors} <= known, (team, phase)
            keys = case_keys[SUBSET_OF_PHASE[phase]]
            for key, e in zip(keys, errors, strict=True):
                private[team].add_number(
                    f"team {team} {phase} prediction of {key}", grades[key] + e
                )
    # a team's legitimate view must not look like a leak of someone else's secret
    for team, seen in team_visible.items():
        assert not seen & set(forbidden_for(hidden, private, team)), team

    # each team's predictions as the viewer draws them (outlined overlays), where no other
    # team's prediction or any reference draws the same picture
    drawn: dict[bytes, set[str]] = {}
    for (team, _phase, track), sid in submissions.items():
        if track != "seg":
            continue
        with zipfile.ZipFile(io.BytesIO(cat.store.get_bytes(archive_digests[sid]))) as zf:
            for member in zf.namelist():
                path = work / f"{sid}-{member}"
                path.write_bytes(zf.read(member))
                for index in range(viewer.volume_shape(path)[2]):
                    png = viewer.label_slice_png(path, 2, index, outline=True)
                    drawn.setdefault(png, set()).add(team)
                    prediction_pngs[png] = (
                        f"team {team} prediction overlay of {member} in submission {sid}, "
                        f"slice {index}"
                    )
    for png, who in drawn.items():
        if len(who) == 1:
            (team,) = who
            private[team].add(prediction_pngs[png], png)
    hidden_pngs: dict[bytes, str] = {}
    public_pngs = set()
    for key, digest in labels.items():
        path = _nifti(cat, digest, work)
        for index in range(viewer.volume_shape(path)[2]):
            png = viewer.label_slice_png(path, 2, index, outline=False)
            if key in case_keys["test"]:
                hidden_pngs[png] = f"reference overlay of hidden case {key}, slice {index}"
            else:
                public_pngs.add(png)
    for png in public_pngs:  # e.g. an empty slice looks the same for every case
        hidden_pngs.pop(png, None)
    for png in hidden_pngs.keys() | public_pngs:
        for secrets in private.values():
            secrets.items.pop(png, None)
    assert len(hidden_pngs) >= 2
    for team, secrets in private.items():
        assert any("prediction overlay" in x for x in secrets.items.values()), team
    # team A's member has a lab training run: only its owner may see or cancel it
    lab_runs = {}
    with cat.sessions() as s, s.begin():
        run = LabRun(
            owner_id=callers["A"].user_id,
            name="ann-private-run",
            recipe_yaml="name: ann-private-run\ndescription: lab recipe secret of ann 7f3e\n",
            recipe_digest="0" * 64,
            status="queued",
            out_dir=str(work / "lab-run-a"),
        )
        s.add(run)
        s.flush()
        lab_runs["A"] = run.id
    private["A"].add("lab run recipe of team A's member", "lab recipe secret of ann 7f3e")
    lab_models = [_lab_model(cat, callers["A"].user_id, work)]
    private["A"].add("model card of team A's member's model", "model card secret of ann 2b9d")
    return World(
        client,
        cat,
        callers,
        case_keys,
        submissions,
        invitation_tokens,
        invitation_ids,
        hidden,
        private,
        hidden_pngs,
        team_visible,
        spec_yaml,
        _grade_archive(grades, case_keys["validation"], (1.5, 2.5)),
        lab_runs,
        lab_models,
    )


def _lab_model(cat: Catalogue, owner_id: int | None, work: Path) -> str:
    """A registry model trained by a (finished) lab run of ``owner_id``: only they (and
    admins) may see, download or submit it; its card and recipe carry a secret."""
    recipe = (
        "name: ann-private-model\n"
        "description: model card secret of ann 2b9d\n"
        "dataset: {name: brain, split: challenge, target: grade}\n"
        "task: {type: regression, spatial_dims: 3}\n"
        "network: {block: densenet}\n"
        "loss: {block: l1}\n"
        "trainer: {patch_size: [8, 8, 4]}\n"
    )
    with cat.sessions() as s, s.begin():
        s.add(
            LabModel(
                name="ann-private-model",
                version=1,
                task="regression",
                dataset_name="brain",
                dataset_split="challenge",
                dataset_version="0" * 64,
                recipe_yaml=recipe,
                recipe_digest="0" * 64,
                metrics={"mae": 1.0},
                curves=[{"epoch": 1, "loss": 1.0, "lr": 0.001, "mae": 1.0}],
                model_card={"intended_use": "model card secret of ann 2b9d"},
                weights_digest=cat.store.put_bytes(b"weights of ann's model"),
                onnx_digest=cat.store.put_bytes(b"onnx of ann's model 2b9d"),
                onnx_size=24,
            )
        )
        s.add(
            LabRun(
                owner_id=owner_id,
                name="ann-private-model",
                recipe_yaml=recipe,
                recipe_digest="0" * 64,
                status="succeeded",
                out_dir=str(work / "lab-run-a2"),
                model_ref="ann-private-model:1",
            )
        )
    return "ann-private-model:1"
