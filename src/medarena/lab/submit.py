"""Registry models for users: who sees them, their files, and one-click challenge submissions.

One path for the CLI (``medarena lab models submit|download``), the web pages
(/lab/models) and the demo: :func:`model_archive` builds ``model.onnx`` +
``manifest.yaml`` from the registry (the manifest derived from the recipe's preprocessing
blocks and the track's outputs) and :func:`submit_registry_model` hands it to
:func:`medarena.challenges.submissions.submit`, the service every upload goes through
(same checks, limits and quotas).

Who sees a model: platform admins see every model; a user sees the models registered by
their own lab runs (``lab_runs.owner_id``, the run's ``model_ref``). A model trained
outside a run (``medarena lab train``, the demo) has no owner: only admins see it on the
web; the CLI, which works on the database directly, is an operator's tool and sees all.
Anyone else gets "no model", exactly as for a model that does not exist.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.challenges.models import MANIFEST_FILE, MODEL_FILE, NORMALISATION_BLOCKS
from medarena.challenges.spec import Track
from medarena.datasets.catalogue import Catalogue
from medarena.db.lab_models import LabRun
from medarena.db.platform_models import Submission, User
from medarena.errors import InputError, NotFoundError
from medarena.lab.recipe import Recipe, parse_recipe
from medarena.lab.registry import ModelInfo, get_model, list_models

# the lab's task type -> the challenge track task its model can be submitted to
TRACK_TASK = {
    "regression": "regression",
    "classification": "classification",
    "multilabel": "multilabel",
    "segmentation": "segmentation",
    "detection": "detection",
    "image_to_image": "image-to-image",
}
# training-only preprocessing of map tasks (sliding windows see the whole image)
_TRAINING_ONLY = {"rand_crop_by_label", "spatial_pad", "crop_foreground"}
DOWNLOAD_FILES = (MODEL_FILE, "model_card.json", "recipe.yaml")


# ---------------------------------------------------------------------------- who sees what


def _owned_refs(session: Session, user: User) -> set[str]:
    q = select(LabRun.model_ref).where(LabRun.owner_id == user.id, LabRun.model_ref.is_not(None))
    return {str(r) for r in session.scalars(q)}


def may_see(session: Session, user: User, info: ModelInfo) -> bool:
    """Whether ``user`` may see ``info`` (admins: all; others: their runs' models)."""
    return user.is_admin or info.ref in _owned_refs(session, user)


def visible_models(cat: Catalogue, session: Session, user: User) -> list[ModelInfo]:
    """The registry models ``user`` may see, by name then version."""
    models = list_models(cat)
    if user.is_admin:
        return models
    mine = _owned_refs(session, user)
    return [m for m in models if m.ref in mine]


def get_visible_model(cat: Catalogue, session: Session, user: User, ref: str) -> ModelInfo:
    """The model ``ref`` if ``user`` may see it; NotFoundError naming only ``ref`` otherwise."""
    try:
        info = get_model(cat, ref)
    except NotFoundError:
        info = None
    if info is None or not may_see(session, user, info):
        raise NotFoundError(f"no model {ref!r} that you may see")
    return info


# ---------------------------------------------------------------------------- files


def model_files(cat: Catalogue, info: ModelInfo) -> dict[str, bytes]:
    """The downloadable files of a model: ONNX, model card (JSON) and recipe (YAML)."""
    if info.onnx_digest is None:
        raise InputError(
            f"model {info.ref} has no ONNX export (its recipe set export.onnx: false)",
            value=info.ref,
        )
    return {
        MODEL_FILE: cat.store.get_bytes(info.onnx_digest),
        "model_card.json": json.dumps(info.model_card, indent=2).encode(),
        "recipe.yaml": info.recipe_yaml.encode(),
    }


def download_model(cat: Catalogue, info: ModelInfo, out_dir: Path) -> list[Path]:
    """Write the model's files into ``out_dir`` (created); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in model_files(cat, info).items():
        path = out_dir / name
        path.write_bytes(data)
        written.append(path)
    return written


def download_zip(cat: Catalogue, info: ModelInfo) -> bytes:
    """The model's files as one zip (the web download)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in model_files(cat, info).items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------- manifest


def _refuse(info: ModelInfo, track: Track, why: str) -> InputError:
    return InputError(
        f"model {info.ref} cannot be submitted to track {track.slug!r}: {why}", value=info.ref
    )


def _outputs(recipe: Recipe, info: ModelInfo, track: Track) -> dict[str, Any]:
    t, cfg = recipe.task, track.task_config
    if t.type == "regression":
        return {"kind": "value", "names": [str(cfg.get("value_column", "value"))]}
    if t.type == "classification":
        if cfg.get("mode", "binary") == "binary":
            raise _refuse(
                info,
                track,
                "a binary classification track takes one score per case; a lab classifier "
                "gives one per class (submit it to a multiclass track)",
            )
        names = cfg.get("class_names") or t.class_names or [str(i) for i in range(t.num_classes)]
        return {"kind": "scores", "activation": "softmax", "names": [str(n) for n in names]}
    if t.type == "multilabel":
        names = cfg.get("labels") or recipe.dataset.targets or []
        return {"kind": "scores", "activation": "sigmoid", "names": [str(n) for n in names]}
    if t.type == "segmentation":
        return {"kind": "argmax", "names": [str(i) for i in range(1, t.num_classes)]}
    if t.type == "detection":
        d = t.detection
        if getattr(d, "mode", "heatmap") != "heatmap":
            raise _refuse(
                info,
                track,
                "a detection track reads a heatmap; this model segments the findings "
                "(task.detection.mode: segmentation)",
            )
        out: dict[str, Any] = {"kind": "heatmap", "activation": "sigmoid"}
        if d is not None:
            out.update(
                threshold=d.threshold,
                min_distance_mm=d.min_distance_mm,
                max_candidates=d.max_candidates,
            )
        return out
    # image_to_image: the target was normalised like the input; undo a fixed window
    # (with per-channel normalisation: the block covering channel 0, the target's channel)
    windows = [
        r
        for r in recipe.preprocess
        if r.block in NORMALISATION_BLOCKS and 0 in (r.params.get("channels") or [0])
    ]
    if len(windows) != 1 or windows[0].block != "ct_window":
        raise _refuse(
            info,
            track,
            "an image-to-image model's output is written back in the target's units, which "
            "needs exactly one fixed intensity window (ct_window) among its preprocessing "
            f"blocks (it has {[r.block for r in windows] or 'none'})",
        )
    p = recipe.params_of(windows[0]).model_dump()
    scale = (p["a_max"] - p["a_min"]) / (p["b_max"] - p["b_min"])
    return {"kind": "image", "scale": scale, "offset": p["a_min"] - p["b_min"] * scale}


def manifest_for(info: ModelInfo, track: Track) -> str:
    """The manifest.yaml of ``info`` for ``track``: InputError with the reason if none fits."""
    recipe = parse_recipe(info.recipe_yaml, f"recipe of {info.ref}")
    want = TRACK_TASK.get(recipe.task.type)
    if want != track.task:
        raise _refuse(info, track, f"a {recipe.task.type} model does not fit a {track.task} track")
    image_level = track.task in ("regression", "classification", "multilabel")
    inputs: dict[str, Any] = {
        "channels": [f"channel{i}" for i in range(recipe.task.in_channels)],
        "spatial_dims": recipe.task.spatial_dims,
    }
    order = []
    for ref in recipe.preprocess:
        if ref.block in ("orientation", "spacing"):
            if not image_level:
                raise _refuse(
                    info,
                    track,
                    f"its recipe resamples ({ref.block}); {track.task} outputs must stay on "
                    "the case's own grid",
                )
            values = recipe.params_of(ref).model_dump()
            if ref.block == "orientation":
                inputs["orientation"] = values["axcodes"]
            else:
                inputs["spacing"] = list(values["pixdim"])
            order.append(0 if ref.block == "orientation" else 1)
        elif ref.block in NORMALISATION_BLOCKS:
            values = recipe.params_of(ref).model_dump(mode="json")
            if values.get("channels") is None:  # every channel: the manifest's default
                values.pop("channels", None)
            inputs.setdefault("normalisation", []).append({"block": ref.block, "params": values})
            order.append(2)
        elif ref.block in _TRAINING_ONLY and not image_level:
            continue
        else:
            raise _refuse(
                info, track, f"preprocessing block {ref.block!r} has no manifest equivalent"
            )
    if order != sorted(order):
        raise _refuse(
            info,
            track,
            "the worker applies orientation, spacing, then normalisation; the recipe lists "
            "them in another order",
        )
    patch = list(recipe.trainer.patch_size)
    if image_level:
        inputs["size"] = patch
    else:
        inputs["patch_size"] = patch
        sw = recipe.trainer.sliding_window
        if sw is not None:
            inputs["overlap"] = sw.overlap
    manifest = {"format": 1, "inputs": inputs, "outputs": _outputs(recipe, info, track)}
    return yaml.safe_dump(manifest, sort_keys=False)


def model_archive(cat: Catalogue, info: ModelInfo, track: Track) -> bytes:
    """A model submission's zip (model.onnx + manifest.yaml) of a registry model."""
    manifest = manifest_for(info, track)
    onnx_bytes = model_files(cat, info)[MODEL_FILE]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MODEL_FILE, onnx_bytes)
        zf.writestr(MANIFEST_FILE, manifest)
    return buf.getvalue()


# ---------------------------------------------------------------------------- submitting


def submit_registry_model(
    cat: Catalogue,
    info: ModelInfo,
    *,
    user_id: int,
    challenge: str,
    track: str,
    phase: str,
    now: dt.datetime | None = None,
) -> Submission:
    """Submit ``info`` as ``user_id`` (their team) through the normal submission service."""
    from medarena.challenges.service import find_track_phase, get_challenge, load_spec
    from medarena.challenges.submissions import submit

    with cat.sessions() as s:
        spec = load_spec(get_challenge(s, challenge))
        target_track, _ = find_track_phase(spec, track, phase)
    data = model_archive(cat, info, target_track)
    return submit(
        cat.sessions,
        cat.store,
        challenge_slug=challenge,
        track_slug=track,
        phase_slug=phase,
        user_id=user_id,
        stream=io.BytesIO(data),
        filename=f"{info.name}-v{info.version}-model.zip",
        work_dir=Path(cat.settings.data_dir) / "work",
        now=now,
    )


@dataclass(frozen=True)
class Destination:
    """A phase where a user's team may submit a model to a track the model fits."""

    challenge: str
    challenge_title: str
    track: str
    track_title: str
    phase: str
    phase_title: str

    @property
    def value(self) -> str:
        """The form's option value: challenge/track/phase."""
        return f"{self.challenge}/{self.track}/{self.phase}"


def destinations(session: Session, user: User, info: ModelInfo) -> list[Destination]:
    """Open phases taking models where ``user`` may submit to a track of the model's task
    and dataset (the checks of :func:`check_can_submit`, quotas included)."""
    from medarena.accounts.errors import PermissionDenied
    from medarena.challenges.service import load_spec
    from medarena.challenges.submissions import check_can_submit
    from medarena.db.platform_models import Challenge, TeamMember

    want = TRACK_TASK.get(info.task)
    ids = session.scalars(select(TeamMember.challenge_id).where(TeamMember.user_id == user.id))
    out = []
    for ch in session.scalars(select(Challenge).where(Challenge.id.in_(list(ids)))):
        spec = load_spec(ch)
        for phase in spec.phases:
            if "model" not in phase.submission_kinds:
                continue
            for tr in spec.tracks:
                if tr.task != want or tr.dataset != info.dataset:
                    continue
                if phase.tracks is not None and tr.slug not in phase.tracks:
                    continue
                try:
                    check_can_submit(session, ch.slug, tr.slug, phase.slug, user)
                except (InputError, PermissionDenied):  # no team, quota, closed: not offered
                    continue
                out.append(
                    Destination(ch.slug, ch.title, tr.slug, tr.title, phase.slug, phase.title)
                )
    return out


def find_user(session: Session, email: str) -> User:
    """The user of ``email`` (CLI); NotFoundError naming it."""
    user = session.scalars(select(User).where(User.email == email.strip().lower())).one_or_none()
    if user is None:
        raise NotFoundError(f"no user with email {email!r}")
    return user


def team_captain(session: Session, challenge: str, team: str) -> User:
    """The captain of team ``team`` of challenge ``challenge`` (CLI); NotFoundError naming both."""
    from medarena.challenges.service import get_challenge
    from medarena.db.platform_models import Team, TeamMember

    ch = get_challenge(session, challenge)
    q = (
        select(User)
        .join(TeamMember, TeamMember.user_id == User.id)
        .join(Team, Team.id == TeamMember.team_id)
        .where(Team.challenge_id == ch.id, Team.name == team, TeamMember.is_captain.is_(True))
    )
    user = session.scalars(q.limit(1)).one_or_none()
    if user is None:
        raise NotFoundError(f"no team {team!r} with a captain in challenge {challenge!r}")
    return user


def owner_of(session: Session, info: ModelInfo) -> User | None:
    """The owner of the lab run that registered ``info`` (None: trained outside a run)."""
    q = select(LabRun.owner_id).where(LabRun.model_ref == info.ref).limit(1)
    owner = session.scalar(q)
    return None if owner is None else session.get(User, owner)
