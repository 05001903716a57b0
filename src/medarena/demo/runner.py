"""`medarena demo`: generated tracks, a demo challenge, accounts and scored baselines.

Steps, each skipped when its result is already there (so a second run changes nothing):

1. each track's data are generated into ``data_dir/demo-cache/<track>-v<VERSION>-seed<N>``
   (kept: cached by seed and data version), ingested as dataset ``demo-<track>`` and split
   ``demo``: the MSD ``imagesTs`` cases (ingest's subset hint ``test``) form the hidden
   ``test`` subset, every fourth training case the ``validation`` subset, the rest
   ``train``. Table tasks get the test cases' labels from the generator's hidden reference;
   dose tracks get their reference objects through
   :func:`medarena.datasets.dose.attach_dose_references`, detection tracks their findings;
2. an organizer and three participant teams (fixed demo e-mails, random passwords returned
   once, stored argon2-hashed by :mod:`medarena.accounts`);
3. the challenge ``demo`` with one track per dataset and two phases (``preliminary``, a
   public board on the validation subset; ``final``, the hidden test subset, its board
   private until close);
4. classical baselines of both teams per track and phase, uploaded as real archives through
   :func:`medarena.challenges.submissions.submit` and scored by an in-process job worker;
   for the tracks of :data:`medarena.demo.lab_models.LAB_PLANS`, Team Lab's model: a lab
   recipe trained on the train subset, registered, exported to ONNX and submitted as a
   model archive (phases accept ``predictions`` and ``model``). The same worker runs the
   explanation job that scoring a model on the public ``validation`` subset queues
   (:mod:`medarena.challenges.explanations`), so the viewer shows the model's heat maps on
   those cases without a server's worker.

The lung-nodule track's nodules and excluded findings are stored as each case's findings
object (:func:`medarena.datasets.findings.attach_findings`), the detection reference.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import secrets
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml
from numpy.typing import NDArray
from scipy import ndimage
from sqlalchemy import func, select

from medarena.accounts.users import create_user, get_user_by_email
from medarena.challenges.explanations import EXPLAIN_JOB_KIND
from medarena.challenges.explanations import HANDLERS as EXPLAIN_HANDLERS
from medarena.challenges.scoring import HANDLERS as SCORE_HANDLERS
from medarena.challenges.service import (
    create_challenge,
    get_challenge,
    join_challenge,
    load_spec,
    update_challenge,
)
from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.challenges.submissions import submit
from medarena.challenges.teams import create_team, team_of
from medarena.datasets.catalogue import Catalogue
from medarena.datasets.dose import attach_dose_references
from medarena.datasets.findings import attach_findings
from medarena.datasets.ingest import IngestOptions, ingest
from medarena.db.models import Case, Dataset, Split, SplitAssignment
from medarena.db.platform_models import Challenge, Job, Submission, Team, User
from medarena.demo.generators.common import GeneratedTrack
from medarena.demo.lab_models import LAB_PLANS, LAB_TEAM, train_lab_model
from medarena.errors import InputError
from medarena.jobs.worker import Worker
from medarena.lab.registry import get_model
from medarena.lab.submit import submit_registry_model

# Bump when a generator's output changes: the cache folder name carries it.
VERSION = 1
SPLIT = "demo"
CHALLENGE_SLUG = "demo"
PHASE_OPENS = "2025-01-01T00:00:00Z"
PHASE_CLOSES = "2030-12-31T23:59:59Z"
SIZES = {"demo": (30, 15), "tiny": (8, 4)}

ORGANIZER = ("organizer@demo.medarena.example", "Demo organizer")
TEAMS = (
    ("Team Alpha", "alpha@demo.medarena.example", "Alpha captain"),
    ("Team Beta", "beta@demo.medarena.example", "Beta captain"),
)

Notify = Callable[[str], None]
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrackPlan:
    """How one generated track becomes a challenge track."""

    name: str  # generator module and cache name
    slug: str
    title: str
    metrics: tuple[str, ...]
    primary_metric: str
    task_config: Mapping[str, Any] | None = None  # overrides the generator's


TRACKS: dict[str, TrackPlan] = {
    p.name: p
    for p in (
        TrackPlan(
            "fundus",
            "fundus",
            "Fundus multi-disease classification",
            ("auc", "f1_macro", "hamming_accuracy"),
            "auc",
        ),
        TrackPlan(
            "brain_age",
            "brain-age",
            "Brain-age regression",
            ("mae", "rmse"),
            "mae",
            {"value_column": "chronological_age"},
        ),
        TrackPlan(
            "glioma", "glioma", "Glioma segmentation", ("WT/dice", "TC/dice", "ET/dice"), "WT/dice"
        ),
        TrackPlan(
            "dose",
            "dose",
            "Radiotherapy dose prediction",
            ("dose_score", "dvh_score"),
            "dose_score",
        ),
        TrackPlan(
            "petct", "petct", "PET/CT lesion segmentation", ("dice", "fpv_ml", "fnv_ml"), "dice"
        ),
        TrackPlan(
            "lung_nodules",
            "lung-nodules",
            "Lung-nodule detection",
            ("cpm",),
            "cpm",
            {"bootstrap": 200, "seed": 0},
        ),
        TrackPlan("lowdose_ct", "lowdose-ct", "Low-dose CT denoising", ("psnr", "ssim"), "psnr"),
    )
}
SKIPPED_TRACKS: dict[str, str] = {}  # track -> why it is not wired


@dataclass
class DemoReport:
    """What a demo run did; counts of what it added (all zero on a repeated run)."""

    tracks: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    ingested: list[str] = field(default_factory=list)
    accounts: dict[str, str | None] = field(default_factory=dict)  # e-mail -> new password
    challenge_created: bool = False
    challenge_updated: bool = False
    submitted: int = 0
    jobs_run: int = 0  # scoring jobs
    explained: int = 0  # explanation jobs (model submissions scored on a public subset)
    failed: list[str] = field(default_factory=list)
    lab_models: list[str] = field(default_factory=list)  # registry refs trained this run
    real_parts: dict[str, tuple[str, ...]] = field(default_factory=dict)


def parse_tracks(value: str | None) -> list[str]:
    """Track names from ``a,b``; all wired tracks when empty. InputError names a bad one."""
    if not value:
        return list(TRACKS)
    names = [v.strip().replace("-", "_") for v in value.split(",") if v.strip()]
    for n in names:
        if n in SKIPPED_TRACKS:
            raise InputError(f"--tracks: {SKIPPED_TRACKS[n]}", value=n)
        if n not in TRACKS:
            raise InputError(
                f"--tracks: unknown track; known: {', '.join(TRACKS)}", value=n, path="--tracks"
            )
    return list(dict.fromkeys(names))


def dataset_name(track: str) -> str:
    return "demo-" + track.replace("_", "-")


# ---------------------------------------------------------------------------- data


def cache_dir(data_dir: Path, track: str, seed: int, size: str) -> Path:
    suffix = "" if size == "demo" else f"-{size}"
    return Path(data_dir) / "demo-cache" / f"{track}-v{VERSION}-seed{seed}{suffix}"


def generate_track(data_dir: Path, track: str, seed: int, size: str) -> tuple[GeneratedTrack, bool]:
    """The generated track, from the cache when complete; (track, generated now)."""
    root = cache_dir(data_dir, track, seed, size)
    module = importlib.import_module(f"medarena.demo.generators.{track}")
    done = root / ".complete"
    if done.is_file():
        return _load_track(module, root), False
    shutil.rmtree(root, ignore_errors=True)  # a half-written folder from a killed run
    n_train, n_test = SIZES[size]
    gen: GeneratedTrack = module.generate(
        root, n_train=n_train, n_test=n_test, seed=seed, size=size
    )
    done.write_text("complete\n")
    return gen, True


def _load_track(module: Any, root: Path) -> GeneratedTrack:
    import json

    m = json.loads((root / "track.json").read_text())
    return GeneratedTrack(
        track=m["track"],
        task=m["task"],
        task_config=m["task_config"],
        root=root,
        ingest_dir=root / m["ingest_dir"],
        reference=root / m["reference"],
        train_ids=tuple(m["train_ids"]),
        test_ids=tuple(m["test_ids"]),
        files=tuple(m["files"]),
        channels=tuple(m["channels"]),
        label_names=m["label_names"],
        real_parts=tuple(m["real_parts"]),
        synthetic_parts=tuple(m["synthetic_parts"]),
        seed=int(m["seed"]),
        size=str(m["size"]),
        notes=m.get("notes", {}),
    )


def validation_ids(gen: GeneratedTrack) -> list[str]:
    """Every fourth training case: the preliminary phase's scored subset."""
    return [c for i, c in enumerate(sorted(gen.train_ids)) if i % 4 == 3]


def _existing_split(cat: Catalogue, name: str) -> dict[str, Any] | None:
    """The stored spec of the dataset's demo split, None when there is none."""
    with cat.sessions() as s:
        spec = s.scalar(
            select(Split.spec)
            .join(Dataset, Dataset.id == Split.dataset_id)
            .where(Dataset.name == name, Split.name == SPLIT)
        )
    return dict(spec) if spec is not None else None


def check_existing(cat: Catalogue, names: Sequence[str], seed: int, size: str) -> None:
    """Refuse to mix demos: a data dir holds the datasets of one seed, size and version."""
    wanted = {"seed": seed, "size": size, "version": VERSION}
    for track in names:
        existing = _existing_split(cat, dataset_name(track))
        if existing is None:
            continue
        made = {k: existing.get(k) for k in wanted}
        if made != wanted:
            raise InputError(
                f"dataset {dataset_name(track)!r} in this data dir holds the demo data of "
                f"{made}, not {wanted}; a data dir holds one demo: use another "
                "MEDARENA_DATA_DIR, or the same --seed and --size",
                value=wanted,
            )


def describe_data(gen: GeneratedTrack) -> str:
    """What is real and what is synthetic in a track's data: the dataset's description."""
    real = "; ".join(gen.real_parts) or "nothing (all synthetic)"
    synthetic = "; ".join(gen.synthetic_parts) or "nothing"
    return (
        f"medarena demo data (seed {gen.seed}, {gen.size} size). Real: {real}. "
        f"Synthetic: {synthetic}. See docs/demo-data.md."
    )


def ingest_track(cat: Catalogue, gen: GeneratedTrack, progress: ProgressFn) -> bool:
    """Ingest, attach references and split one track; False when its split already exists."""
    name = dataset_name(gen.track)
    if _existing_split(cat, name) is not None:
        return False
    summary = ingest(
        cat, gen.ingest_dir, name, IngestOptions(description=describe_data(gen)), progress=progress
    )
    if summary.issues:
        raise InputError(
            f"demo track {gen.track}: ingest reported problems: "
            + "; ".join(f"{i.path}: {i.reason}" for i in summary.issues[:5]),
            path=gen.ingest_dir,
        )
    if gen.task in ("multilabel", "regression", "classification"):
        labels = _test_labels_csv(gen, TRACKS[gen.track])
        ingest(cat, gen.ingest_dir, name, IngestOptions(labels_csv=labels), progress=progress)
    if gen.task == "detection":
        attach_findings(
            cat, name, gen.root / "annotations.csv", gen.root / "annotations_excluded.csv"
        )
    if gen.task == "dose":
        attach_dose_references(cat, name, gen.reference, gen.test_ids)
        val_root = gen.root / "validation-reference"
        if not val_root.is_dir():
            _write_dose_references(gen, validation_ids(gen), val_root)
        attach_dose_references(cat, name, val_root, validation_ids(gen))
    _make_split(cat, name, gen)
    return True


def _test_labels_csv(gen: GeneratedTrack, plan: TrackPlan) -> Path:
    """The hidden reference as a labels CSV whose columns are the training labels' names."""
    with open(gen.reference, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rename = {}
    if gen.task == "regression" and plan.task_config:
        rename[str(gen.task_config.get("value_column", "value"))] = plan.task_config["value_column"]
    out = gen.root / "test-labels.csv"
    cols = [rename.get(c, c) for c in rows[0]] if rows else ["case_id"]
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow(list(r.values()))
    return out


def _write_dose_references(gen: GeneratedTrack, ids: Sequence[str], dest: Path) -> None:
    """Reference folders (dose in Gy, possible-dose mask, ROIs) of training cases."""
    rois = list(gen.task_config["rois"])
    for cid in ids:
        folder = dest / cid
        folder.mkdir(parents=True, exist_ok=True)
        label, affine = _read(gen.ingest_dir / "labelsTr" / f"{cid}.nii.gz")
        dose = (label / 100.0).astype(np.float32)
        mask, _ = _read(gen.ingest_dir / "imagesTr" / f"{cid}_0001.nii.gz")
        bits, _ = _read(gen.ingest_dir / "imagesTr" / f"{cid}_0002.nii.gz")
        nib.save(nib.Nifti1Image(dose, affine), folder / "dose.nii.gz")
        nib.save(
            nib.Nifti1Image((mask > 0).astype(np.uint8), affine),
            folder / "possible_dose_mask.nii.gz",
        )
        for k, roi in enumerate(rois):
            roi_mask = ((bits.astype(np.int64) >> k) & 1).astype(np.uint8)
            nib.save(nib.Nifti1Image(roi_mask, affine), folder / f"{roi}.nii.gz")


def _make_split(cat: Catalogue, name: str, gen: GeneratedTrack) -> None:
    """Split ``demo`` from the generator's subsets: test hidden (the MSD imagesTs hint)."""
    val = set(validation_ids(gen))
    with cat.sessions() as s, s.begin():
        ds = s.scalars(select(Dataset).where(Dataset.name == name)).one()
        cases = s.scalars(select(Case).where(Case.dataset_id == ds.id)).all()
        split = Split(
            dataset_id=ds.id,
            name=SPLIT,
            spec={
                "name": SPLIT,
                "subsets": ["train", "validation", "test"],
                "source": "MSD subset hint (imagesTs = test); every 4th training case = validation",
                "hidden": ["test"],
                "seed": gen.seed,
                "size": gen.size,
                "version": VERSION,
            },
            hidden_subsets=["test"],
        )
        s.add(split)
        s.flush()
        for c in cases:
            hint = (c.extra or {}).get("subset_hint")
            subset = "test" if hint == "test" else "validation" if c.case_key in val else "train"
            s.add(
                SplitAssignment(
                    split_id=split.id, case_id=c.id, subset=subset, hidden=subset == "test"
                )
            )


# ---------------------------------------------------------------------------- challenge


def challenge_spec(gens: Sequence[GeneratedTrack]) -> ChallengeSpec:
    """The demo challenge: one track per generated dataset, a preliminary and a final phase."""
    tracks: list[dict[str, Any]] = []
    data_lines = []
    for gen in gens:
        plan = TRACKS[gen.track]
        tracks.append(
            {
                "slug": plan.slug,
                "title": plan.title,
                "description": "Real: "
                + ("; ".join(gen.real_parts) or "nothing")
                + ".\n\nSynthetic: "
                + "; ".join(gen.synthetic_parts)
                + ".",
                "task": gen.task,
                "task_config": dict(plan.task_config or gen.task_config),
                "metrics": list(plan.metrics),
                "primary_metric": plan.primary_metric,
                "dataset": dataset_name(gen.track),
                "split": SPLIT,
                "train_subset": "train",
                "reference_subset": "test",
            }
        )
        real = "; ".join(gen.real_parts) or "nothing (fully synthetic)"
        data_lines.append(f"- **{plan.title}**: real: {real}. Everything else is synthetic.")
    spec = {
        "slug": CHALLENGE_SLUG,
        "title": "medarena demo challenge",
        "summary": "Tracks on generated data: real anatomy from installed packages, exact "
        "synthetic findings.",
        "description": "Created by `medarena demo`. Every image is partly or wholly "
        "synthetic; see docs/demo-data.md for each generator's model and limits.",
        "rules": "## Rules\n\n1. This is a demonstration: no image here comes from a patient "
        "study. Which data are real and which synthetic:\n\n"
        + "\n".join(data_lines)
        + "\n\n2. Train on the training subset only; the test labels stay hidden.\n",
        "team_size_max": 4,
        "tracks": tracks,
        "phases": [
            {
                "slug": "preliminary",
                "title": "Preliminary",
                "description": "Scores the validation subset; public leaderboard.",
                "opens": PHASE_OPENS,
                "closes": PHASE_CLOSES,
                "scored_subset": "validation",
                "leaderboard": "public",
                "submissions_per_day": 20,
                "best_or_latest": "best",
                "submission_kinds": ["predictions", "model"],
            },
            {
                "slug": "final",
                "title": "Final",
                "description": "Scores the hidden test subset; the board is private until close.",
                "opens": PHASE_OPENS,
                "closes": PHASE_CLOSES,
                "scored_subset": "test",
                "leaderboard": "private_until_close",
                "submissions_total": 5,
                "requires_phase": "preliminary",
                "best_or_latest": "latest",
                "submission_kinds": ["predictions", "model"],
            },
        ],
    }
    return parse_spec(yaml.safe_dump(spec, sort_keys=False), "demo challenge spec")


def ensure_accounts(cat: Catalogue, report: DemoReport) -> dict[str, int]:
    """The organizer and the three captains: created once; e-mail -> user id."""
    ids: dict[str, int] = {}
    with cat.sessions() as s, s.begin():
        for email, display in (ORGANIZER, *((e, d) for _t, e, d in (*TEAMS, LAB_TEAM))):
            user = get_user_by_email(s, email)
            if user is None:
                password = secrets.token_urlsafe(12)
                user = create_user(s, email, password, display_name=display)
                report.accounts[email] = password
            else:
                report.accounts[email] = None
            ids[email] = user.id
    return ids


def ensure_challenge(
    cat: Catalogue, gens: Sequence[GeneratedTrack], ids: Mapping[str, int], report: DemoReport
) -> None:
    """Create the challenge, or add tracks to it; join the captains and make their teams."""
    organizer = ids[ORGANIZER[0]]
    with cat.sessions() as s, s.begin():
        existing = s.scalars(
            select(Challenge).where(Challenge.slug == CHALLENGE_SLUG)
        ).one_or_none()
        if existing is None:
            create_challenge(s, challenge_spec(gens), actor_id=organizer)
            report.challenge_created = True
        else:
            old = load_spec(existing)
            spec = challenge_spec(gens)
            if spec.model_dump(mode="json") != old.model_dump(mode="json"):
                update_challenge(s, CHALLENGE_SLUG, spec, actor_id=organizer)
                report.challenge_updated = True
    with cat.sessions() as s, s.begin():
        ch = get_challenge(s, CHALLENGE_SLUG)
        for team_name, email, _display in (*TEAMS, LAB_TEAM):
            user = s.get(User, ids[email])
            assert user is not None
            join_challenge(s, ch, user)
            if team_of(s, ch.id, user.id) is None:
                create_team(s, ch, user, team_name)


# ---------------------------------------------------------------------------- baselines


def _read(path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    img: Any = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float64), np.asarray(img.affine)


def _image(gen: GeneratedTrack, cid: str, channel: int | None) -> tuple[NDArray[np.float64], Any]:
    """Channel ``channel`` (None: the only one) of a generated case, and its affine."""
    folder = gen.ingest_dir / ("imagesTs" if cid in gen.test_ids else "imagesTr")
    names = [f"{cid}_{channel or 0:04d}.nii.gz"]
    if not channel:
        names.append(f"{cid}.nii.gz")
    for name in names:
        if (folder / name).is_file():
            return _read(folder / name)
    raise InputError("demo case file missing from the cache", path=folder / names[0])


def _nifti(arr: NDArray[Any], affine: Any) -> bytes:
    return gzip.compress(nib.Nifti1Image(arr, affine).to_bytes(), mtime=0)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _train_rows(gen: GeneratedTrack, name: str) -> list[dict[str, str]]:
    with open(gen.ingest_dir / name, newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r["case_id"] in set(gen.train_ids)]


def baseline_files(gen: GeneratedTrack, team: int, cases: Sequence[str]) -> dict[str, bytes]:
    """Predictions of team 0 or 1's classical baseline for ``cases``: archive members."""
    task = gen.task
    if task == "multilabel":
        return {"predictions.csv": _fundus(gen, team, cases)}
    if task == "regression":
        return {"predictions.csv": _brain_age(gen, team, cases)}
    if task == "detection":
        return {"predictions.csv": _nodules(gen, team, cases)}
    out: dict[str, bytes] = {}
    for cid in cases:
        if task == "brats":
            arr, aff = _glioma(gen, team, cid)
        elif task == "autopet":
            arr, aff = _petct(gen, team, cid)
        elif task == "image-to-image":
            low, aff = _image(gen, cid, 0)
            arr = (low if team == 0 else ndimage.gaussian_filter(low, (0.8, 0.8, 0))).astype(
                np.float32
            )
        elif task == "dose":
            arr, aff = _dose(gen, team, cid)
        else:  # pragma: no cover - TRACKS lists the wired tasks
            raise InputError("no baseline for this task", value=task)
        out[f"{cid}.nii.gz"] = _nifti(arr, aff)
    return out


def _fundus(gen: GeneratedTrack, team: int, cases: Sequence[str]) -> bytes:
    """Team 0: prior frequencies. Team 1: priors, with haze (low contrast) raising cataract."""
    from PIL import Image

    labels = list(gen.task_config["labels"])
    rows = _train_rows(gen, "labels.csv")
    prior = {k: float(np.mean([float(r[k]) for r in rows])) if rows else 0.5 for k in labels}
    out = []
    for cid in cases:
        scores = dict(prior)
        if team == 1:
            folder = "imagesTs" if cid in gen.test_ids else "imagesTr"
            files = sorted((gen.ingest_dir / folder).glob(f"{cid}*.png"))
            px = np.asarray(Image.open(files[0]).convert("L"), dtype=np.float64) / 255.0
            contrast = float(px[px > 0.05].std()) if np.any(px > 0.05) else 0.0
            scores["cataract"] = float(np.clip(1.0 - 4.0 * contrast, 0.0, 1.0))
        out.append([cid, *(f"{scores[k]:.4f}" for k in labels)])
    return _table(["case_id", *labels], out)


def _brain_age(gen: GeneratedTrack, team: int, cases: Sequence[str]) -> bytes:
    """Team 0: the training mean. Team 1: a line fitted to the dark (CSF-like) fraction."""
    rows = _train_rows(gen, "targets.csv")
    ages = {r["case_id"]: float(r["chronological_age"]) for r in rows}
    mean = float(np.mean(list(ages.values())))

    def dark_fraction(cid: str) -> float:
        t1, _ = _image(gen, cid, None)
        inside = t1 > 0.05 * t1.max()
        return float(np.mean(t1[inside] < 0.45 * np.percentile(t1[inside], 95)))

    if team == 0:
        preds = {c: mean for c in cases}
    else:
        x = np.array([dark_fraction(c) for c in ages])
        y = np.array(list(ages.values()))
        slope, icpt = np.polyfit(x, y, 1) if len(x) > 1 else (0.0, mean)
        preds = {c: float(slope * dark_fraction(c) + icpt) for c in cases}
    col = TRACKS["brain_age"].task_config or {}
    return _table(["case_id", col["value_column"]], [[c, f"{preds[c]:.2f}"] for c in cases])


def _glioma(gen: GeneratedTrack, team: int, cid: str) -> tuple[NDArray[Any], Any]:
    """Intensity rules on contrasts normalised by their brain median (labels 2023)."""
    t1, aff = _image(gen, cid, 0)
    t1ce, _ = _image(gen, cid, 1)
    flair, _ = _image(gen, cid, 3)
    brain = t1 > 0.3 * np.percentile(t1, 99)
    brain = ndimage.binary_fill_holes(brain)

    def norm(a: NDArray[np.float64]) -> NDArray[np.float64]:
        med = float(np.median(a[brain])) if brain.any() else 1.0
        return a / (med or 1.0)

    out = np.zeros(t1.shape, np.uint8)
    oedema = (norm(flair) > 1.45) & brain
    out[oedema] = 2
    if team == 0:
        enhancing = (norm(t1ce) > 1.45) & brain
        core = ndimage.binary_fill_holes(enhancing) & ~enhancing
        out[enhancing] = 3
        out[core] = 1
    return out, aff


def _petct(gen: GeneratedTrack, team: int, cid: str) -> tuple[NDArray[Any], Any]:
    """SUV above a fixed threshold (team 0: 4, team 1: 3), keeping only blobs of at most 40 ml
    (the brain, heart, kidneys and bladder are larger: physiological uptake)."""
    pet, aff = _image(gen, cid, 1)
    hot = pet > (4.0 if team == 0 else 3.0)
    blobs, n = ndimage.label(hot)
    voxel_ml = abs(float(np.linalg.det(np.asarray(aff)[:3, :3]))) / 1000.0
    sizes = np.asarray(ndimage.sum(hot, blobs, np.arange(1, n + 1))) * voxel_ml
    keep = np.flatnonzero(sizes <= 40.0) + 1
    return np.isin(blobs, keep).astype(np.uint8), aff


def _nodules(gen: GeneratedTrack, team: int, cases: Sequence[str]) -> bytes:
    """Candidates: dense blobs (> -400 HU) enclosed by lung. Team 0 gives each probability 1;
    team 1 scores roundness (the fraction of its bounding box a blob fills: vessels are
    thin tubes, nodules balls)."""
    rows: list[list[Any]] = []
    for cid in cases:
        ct, aff = _image(gen, cid, 0)
        air = ct < -500
        outside, _n = ndimage.label(air)
        border = np.unique(np.concatenate([outside[[0, -1]].ravel(), outside[:, [0, -1]].ravel()]))
        lungs = air & ~np.isin(outside, border[border > 0])
        blobs, _count = ndimage.label(ndimage.binary_fill_holes(lungs) & ~lungs & (ct > -400))
        found = 0
        for k, box in enumerate(ndimage.find_objects(blobs), start=1):
            if box is None:
                continue
            part = blobs[box] == k
            centre = np.asarray(ndimage.center_of_mass(part)) + [b.start for b in box]
            x, y, z = (np.asarray(aff) @ np.append(centre, 1.0))[:3]
            prob = 1.0 if team == 0 else float(part.mean())
            rows.append([cid, f"{x:.2f}", f"{y:.2f}", f"{z:.2f}", f"{prob:.4f}"])
            found += 1
        if not found:
            rows.append([cid, "", "", "", ""])
    return _table(["case_id", "x", "y", "z", "probability"], rows)


def _dose(gen: GeneratedTrack, team: int, cid: str) -> tuple[NDArray[Any], Any]:
    """Team 0: the prescription, constant in the possible-dose mask. Team 1: the prescription
    in the target, falling off with the distance from it (no beam model)."""
    mask, aff = _image(gen, cid, 1)
    bits, _ = _image(gen, cid, 2)
    body = mask > 0
    dose = np.zeros(mask.shape, np.float32)
    if team == 0:
        dose[body] = 70.0
        return dose, aff
    ptv = (bits.astype(np.int64) & 1) > 0
    spacing = np.sqrt((np.asarray(aff)[:3, :3] ** 2).sum(axis=0))
    dist = (
        ndimage.distance_transform_edt(~ptv, sampling=spacing)
        if ptv.any()
        else np.zeros(mask.shape)
    )
    dose[body] = (70.0 * np.exp(-dist / 25.0))[body]
    return dose, aff


def _archive(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
            zf.writestr(info, files[name])
    return buf.getvalue()


def _subset_ids(gen: GeneratedTrack, phase: str) -> list[str]:
    return sorted(gen.test_ids) if phase == "final" else validation_ids(gen)


def _has_submission(cat: Catalogue, team_name: str, track: str, phase: str) -> bool:
    with cat.sessions() as s:
        n = s.scalar(
            select(func.count(Submission.id))
            .join(Team, Team.id == Submission.team_id)
            .join(Challenge, Challenge.id == Submission.challenge_id)
            .where(
                Challenge.slug == CHALLENGE_SLUG,
                Team.name == team_name,
                Submission.track_slug == track,
                Submission.phase_slug == phase,
            )
        )
    return bool(n)


def submit_baselines(
    cat: Catalogue,
    gens: Sequence[GeneratedTrack],
    ids: Mapping[str, int],
    phase: str,
    report: DemoReport,
) -> None:
    """Upload each team's baseline to every track of ``phase`` it has not submitted to."""
    work = Path(cat.settings.data_dir) / "work"
    for gen in gens:
        plan = TRACKS[gen.track]
        for team, (team_name, email, _d) in enumerate(TEAMS):
            if _has_submission(cat, team_name, plan.slug, phase):
                continue
            data = _archive(baseline_files(gen, team, _subset_ids(gen, phase)))
            submit(
                cat.sessions,
                cat.store,
                challenge_slug=CHALLENGE_SLUG,
                track_slug=plan.slug,
                phase_slug=phase,
                user_id=ids[email],
                stream=io.BytesIO(data),
                filename=f"{plan.slug}-{phase}-{team_name.split()[-1].lower()}.zip",
                work_dir=work,
            )
            report.submitted += 1


def submit_lab_models(
    cat: Catalogue,
    gens: Sequence[GeneratedTrack],
    ids: Mapping[str, int],
    phase: str,
    report: DemoReport,
) -> None:
    """Team Lab's model archives: a lab recipe trained on the track's train subset, registered
    and exported to ONNX (:mod:`medarena.demo.lab_models`), uploaded once per phase."""
    team_name, email, _d = LAB_TEAM
    for gen in gens:
        plan = TRACKS[gen.track]
        if gen.track not in LAB_PLANS or _has_submission(cat, team_name, plan.slug, phase):
            continue
        cfg = dict(plan.task_config or gen.task_config)
        names = (
            [str(v) for v in cfg["labels"]]
            if gen.task == "multilabel"
            else [str(cfg.get("value_column", "value"))]
        )
        target = names[0] if gen.task == "regression" else None
        ref = train_lab_model(cat, gen, dataset_name(gen.track), SPLIT, target, ids[email])
        if ref not in report.lab_models:
            report.lab_models.append(ref)
        # the one-click path of the CLI and the web: manifest derived from the recipe
        submit_registry_model(
            cat,
            get_model(cat, ref),
            user_id=ids[email],
            challenge=CHALLENGE_SLUG,
            track=plan.slug,
            phase=phase,
        )
        report.submitted += 1


def pending_jobs(cat: Catalogue) -> int:
    with cat.sessions() as s:
        return int(
            s.scalar(select(func.count(Job.id)).where(Job.state.in_(("queued", "running")))) or 0
        )


def _done_explanations(cat: Catalogue) -> int:
    with cat.sessions() as s:
        q = select(func.count(Job.id)).where(Job.kind == EXPLAIN_JOB_KIND, Job.state == "done")
        return int(s.scalar(q) or 0)


# The demo's own worker runs the scoring jobs and the explanation jobs that scoring a model
# submission on a public subset queues, so the viewer shows heat maps without a server.
DEMO_HANDLERS = {**SCORE_HANDLERS, **EXPLAIN_HANDLERS}


def run_worker(cat: Catalogue, progress: ProgressFn, report: DemoReport) -> None:
    """Run every queued scoring and explanation job in-process until the queue is empty."""
    total = pending_jobs(cat)
    if not total:
        return
    explained_before = _done_explanations(cat)
    worker = Worker(cat.sessions, DEMO_HANDLERS, settings=cat.settings, retry_delay_seconds=0.0)
    done = 0
    progress("scoring submissions", 0, total)
    while worker.run_once():
        done += 1
        # a scored model submission queues its explanation job: the total grows
        total = max(total, done + pending_jobs(cat))
        progress("scoring submissions", done, total)
    explained = _done_explanations(cat) - explained_before
    report.explained += explained
    report.jobs_run += done - explained


def failed_submissions(cat: Catalogue) -> list[str]:
    with cat.sessions() as s:
        rows = s.execute(
            select(Submission.track_slug, Submission.phase_slug, Team.name, Submission.error)
            .join(Team, Team.id == Submission.team_id)
            .where(Submission.status == "failed")
        ).all()
    return [f"{t}/{p} {n}: {e}" for t, p, n, e in rows]


# ---------------------------------------------------------------------------- the whole


def _challenge_tracks(cat: Catalogue) -> list[str]:
    """Track names of the demo challenge already stored (empty when there is none)."""
    by_slug = {p.slug: p.name for p in TRACKS.values()}
    with cat.sessions() as s:
        ch = s.scalars(select(Challenge).where(Challenge.slug == CHALLENGE_SLUG)).one_or_none()
        slugs = [t.slug for t in load_spec(ch).tracks] if ch is not None else []
    return [by_slug[x] for x in slugs if x in by_slug]


def run_demo(
    cat: Catalogue,
    *,
    size: str = "demo",
    seed: int = 0,
    tracks: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    notify: Notify | None = None,
) -> DemoReport:
    """Build (or find) the whole demo; see the module docstring."""
    if size not in SIZES:
        raise InputError(f"--size must be one of {', '.join(SIZES)}", value=size, path="--size")
    if seed < 0:
        raise InputError("--seed must be a non-negative whole number", value=seed, path="--seed")
    # tracks of an existing demo challenge stay in it (in their order), so that its spec
    # and rules keep describing every track
    names = _challenge_tracks(cat)
    names += [n for n in (tracks or TRACKS) if n not in names]
    prog = progress or (lambda _s, _d, _t: None)
    say = notify or (lambda _m: None)
    check_existing(cat, names, seed, size)
    report = DemoReport(tracks=names)
    gens = []
    for i, name in enumerate(names):
        prog("generating data", i, len(names))
        gen, fresh = generate_track(cat.settings.data_dir, name, seed, size)
        if fresh:
            report.generated.append(name)
            say(f"generated {name} ({len(gen.train_ids)} training, {len(gen.test_ids)} test cases)")
        report.real_parts[name] = gen.real_parts
        gens.append(gen)
    prog("generating data", len(names), len(names))
    for gen in gens:
        if ingest_track(cat, gen, prog):
            report.ingested.append(gen.track)
            say(f"ingested dataset {dataset_name(gen.track)} (split {SPLIT!r}, test hidden)")
    challenge_spec(gens)  # a spec problem stops the run before accounts are made
    ids = ensure_accounts(cat, report)
    for email, password in report.accounts.items():
        if password:  # at once: a later failure must not lose the only copy
            say(f"created account {email} password {password}")
    ensure_challenge(cat, gens, ids, report)
    for phase in ("preliminary", "final"):
        submit_baselines(cat, gens, ids, phase, report)
        submit_lab_models(cat, gens, ids, phase, report)
        run_worker(cat, prog, report)
    report.failed = failed_submissions(cat)
    return report
