"""What a submission's detail pages draw: slices of a case and metric distributions.

Two things, both server-rendered so the pages need no JavaScript build:

- **slices** of an image task's case as PNG: the image in grey levels, and the reference
  and the prediction as transparent overlays to stack on it (reference filled, prediction
  outlined, one colour per label value), for one axis and slice index;
- **metric distributions** over a submission's cases as one SVG (a box plot with the
  cases as points, one panel per metric), drawn with matplotlib's SVG backend (no pyplot).

Who may see what is decided here, not in the routes: :func:`viewer_case` answers
NotFoundError for a case that is not in the submission's scored subset, and for any case
of a hidden subset unless the user reviews the challenge (organizers, reviewers, admins),
so a participant never gets a slice, let alone a reference overlay, of a hidden case.
A reviewer's rendering of a hidden case's reference is written to the audit log.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from sqlalchemy.orm import Session

from medarena.challenges.archives import extract_archive
from medarena.challenges.data import subset_cases
from medarena.challenges.service import find_track_phase, load_spec, subset_info
from medarena.db.platform_models import Challenge, Submission, User
from medarena.errors import InputError, NotFoundError
from medarena.evaluation import tasks as tasks_mod
from medarena.storage import LocalObjectStore

logger = logging.getLogger(__name__)

Layer = Literal["image", "reference", "prediction"]
LAYERS: tuple[Layer, ...] = ("image", "reference", "prediction")
_IMAGE_ROLES = ("image",)
_LABEL_ROLES = ("label", "seg")
POINTS_ID = "case-points-"  # id prefix of each panel's group of per-case marks
_MIN_SIDE = 256  # slices are scaled up (nearest neighbour) to at least this many pixels
_MAX_SIDE = 1024
# one colour per label value (1, 2, ...), cycling: distinguishable for common colour blindness
_PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class ViewerCase:
    """A case of a submission's scored subset that the user may look at."""

    case_key: str
    image_digest: str
    label_digest: str | None
    hidden: bool


@dataclass(frozen=True)
class ViewerContext:
    """Which cases of a submission a user may view, and whether its task has images."""

    task: str
    image_task: bool
    hidden: bool
    case_keys: list[str]


def _can_review(session: Session, user: User, challenge_id: int) -> bool:
    from medarena.accounts.roles import can_review

    return can_review(session, user, challenge_id)


def viewer_context(session: Session, sub: Submission, user: User) -> ViewerContext:
    """The viewable cases of a visible submission (none of a hidden subset to participants)."""
    challenge = session.get(Challenge, sub.challenge_id)
    assert challenge is not None
    spec = load_spec(challenge)
    track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
    subset = spec.scored_subset(track, phase)
    hidden = subset_info(session, track.dataset, track.split, subset).hidden
    image_task = track.task in tasks_mod.IMAGE_TASKS and track.task != "dose"
    keys: list[str] = []
    if image_task and (not hidden or _can_review(session, user, challenge.id)):
        keys = [c.case_key for c in subset_cases(session, track.dataset, track.split, subset)]
    return ViewerContext(track.task, image_task, hidden, keys)


def viewer_case(session: Session, sub: Submission, user: User, case_key: str) -> ViewerCase:
    """One case the user may view, else NotFoundError (the same answer for every refusal)."""
    challenge = session.get(Challenge, sub.challenge_id)
    assert challenge is not None
    spec = load_spec(challenge)
    track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
    not_found = NotFoundError(f"no viewable case {case_key!r} in submission {sub.id}")
    if track.task not in tasks_mod.IMAGE_TASKS or track.task == "dose":
        raise not_found
    subset = spec.scored_subset(track, phase)
    hidden = subset_info(session, track.dataset, track.split, subset).hidden
    if hidden and not _can_review(session, user, challenge.id):
        raise not_found
    for c in subset_cases(session, track.dataset, track.split, subset):
        if c.case_key != case_key:
            continue
        images = [o.digest for o in c.objects if o.role in _IMAGE_ROLES]
        labels = [o.digest for o in c.objects if o.role in _LABEL_ROLES]
        if len(images) != 1:
            raise not_found
        return ViewerCase(case_key, images[0], labels[0] if len(labels) == 1 else None, hidden)
    raise not_found


# ---------------------------------------------------------------------------- volumes


def _cache_dir(data_dir: Path) -> Path:
    d = Path(data_dir) / "work" / "viewer"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _nifti_copy(store: LocalObjectStore, digest: str, cache: Path) -> Path:
    """The stored object as a NIfTI file nibabel can open (content-addressed, so cached)."""
    with store.open(digest) as fh:
        head = fh.read(2)
    name = f"{digest}.nii.gz" if head == b"\x1f\x8b" else f"{digest}.nii"
    path = cache / name
    if not path.exists():
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", dir=cache)
        os.close(fd)
        store.copy_to(digest, Path(tmp_name))
        Path(tmp_name).replace(path)  # atomic: a concurrent request sees the whole file or none
    return path


def prediction_file(
    store: LocalObjectStore, sub: Submission, case_key: str, data_dir: Path
) -> Path:
    """The submission's prediction of ``case_key`` (archive extracted once, then cached)."""
    cache = _cache_dir(data_dir) / "archives"
    cache.mkdir(exist_ok=True)
    folder = cache / sub.archive_digest
    if not folder.exists():
        work = Path(tempfile.mkdtemp(prefix="extract-", dir=cache))
        try:
            store.copy_to(sub.archive_digest, work / "archive")
            extract_archive(work / "archive", work / "files", display_name=sub.filename)
            with contextlib.suppress(OSError):  # another request extracted it first
                (work / "files").rename(folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for p in sorted(folder.iterdir()):
        if p.is_file() and tasks_mod.case_id_of(p) == case_key:
            return p
    raise NotFoundError(f"submission {sub.id} has no prediction for case {case_key!r}")


def load_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The 3-D array and voxel spacing of a NIfTI file (a 2-D image gets one slice)."""
    try:
        img = nib.nifti1.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"cannot read the NIfTI file ({exc})", path=path.name) from None
    data = np.asanyarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim == 2:
        data, zooms = data[:, :, None], (*zooms[:2], 1.0)
    if data.ndim != 3:
        raise InputError(f"expected a 3-D image, got {data.ndim} dimensions", path=path.name)
    return data, zooms


def volume_shape(path: Path) -> tuple[int, int, int]:
    """Shape of a NIfTI volume from its header only (for the slice range input)."""
    shape = tuple(int(n) for n in nib.nifti1.load(path).shape[:3])
    return (shape[0], shape[1], shape[2] if len(shape) > 2 else 1)


def case_shape(store: LocalObjectStore, case: ViewerCase, data_dir: Path) -> tuple[int, int, int]:
    """Shape of a viewable case's image (the viewer's slice counts per axis)."""
    return volume_shape(_nifti_copy(store, case.image_digest, _cache_dir(data_dir)))


@functools.lru_cache(maxsize=64)
def _window(path: str) -> tuple[float, float]:
    """Grey-level window of a whole volume (1st-99th percentile), the same on every slice."""
    data, _ = load_volume(Path(path))
    finite = np.asarray(data, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def check_slice(shape: tuple[int, ...], axis: int, index: int) -> None:
    """InputError unless ``axis`` is 0, 1 or 2 and ``index`` a slice of ``shape`` along it."""
    if axis not in (0, 1, 2):
        raise InputError("axis must be 0, 1 or 2", path="axis", value=axis)
    if not 0 <= index < shape[axis]:
        raise InputError(
            f"slice index must be between 0 and {shape[axis] - 1} on axis {axis}",
            path="index",
            value=index,
        )


def _plane(data: np.ndarray, spacing: tuple[float, ...], axis: int, index: int) -> np.ndarray:
    """One slice, upright (second remaining axis upwards) and scaled up for its spacing."""
    plane = np.take(data, index, axis=axis)
    sx, sy = (s for i, s in enumerate(spacing[:3]) if i != axis)
    unit = min(sx, sy) if min(sx, sy) > 0 else 1.0
    rx, ry = max(1, round(sx / unit)), max(1, round(sy / unit))
    longest = max(plane.shape[0] * rx, plane.shape[1] * ry)
    k = max(1, min(math.ceil(_MIN_SIDE / longest), _MAX_SIDE // longest or 1))
    plane = np.repeat(np.repeat(plane, rx * k, axis=0), ry * k, axis=1)
    return np.flipud(plane.T)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def image_slice_png(path: Path, axis: int, index: int) -> bytes:
    """A grey-level PNG of one slice of the image at ``path``."""
    data, spacing = load_volume(path)
    check_slice(data.shape, axis, index)
    lo, hi = _window(str(path))
    plane = _plane(np.asarray(data, dtype=np.float64), spacing, axis, index)
    plane = np.nan_to_num(plane, nan=lo, posinf=hi, neginf=lo)
    grey = np.clip((plane - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    return _png(grey)


def label_slice_png(path: Path, axis: int, index: int, *, outline: bool) -> bytes:
    """A transparent RGBA PNG of one slice of a label map: filled, or outlined."""
    data, spacing = load_volume(path)
    check_slice(data.shape, axis, index)
    labels = _plane(
        np.rint(np.nan_to_num(np.asarray(data, np.float64))).astype(np.int64), spacing, axis, index
    )
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    mask = labels > 0
    if outline:
        # a boundary pixel has a 4-neighbour of another value (the image border counts)
        padded = np.pad(labels, 1, mode="constant", constant_values=-1)
        centre = padded[1:-1, 1:-1]
        edge = np.zeros_like(mask)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            edge |= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] != centre
        mask &= edge
    colours = _PALETTE[(labels[mask] - 1) % len(_PALETTE)]
    rgba[mask, :3] = colours
    rgba[mask, 3] = 255 if outline else 115
    return _png(rgba)


def render_layer(
    session: Session,
    store: LocalObjectStore,
    sub: Submission,
    user: User,
    case_key: str,
    layer: str,
    axis: int,
    index: int,
    data_dir: Path,
) -> bytes:
    """The PNG of one layer of one slice of a case the user may view (see the module doc)."""
    if layer not in LAYERS:
        raise InputError(f"layer must be one of {', '.join(LAYERS)}", value=layer)
    case = viewer_case(session, sub, user, case_key)
    cache = _cache_dir(data_dir)
    if layer == "image":
        return image_slice_png(_nifti_copy(store, case.image_digest, cache), axis, index)
    if layer == "prediction":
        return label_slice_png(
            prediction_file(store, sub, case_key, data_dir), axis, index, outline=True
        )
    if case.label_digest is None:
        raise NotFoundError(f"case {case_key!r} has no reference label map")
    if case.hidden:
        # viewer_case let only reviewers through; check again, then leave a trace
        if not _can_review(session, user, sub.challenge_id):
            raise NotFoundError(f"no viewable case {case_key!r} in submission {sub.id}")
        from medarena.accounts.audit import audit

        audit(
            session,
            user.id,
            "data.hidden_read",
            challenge_id=sub.challenge_id,
            target=f"submission:{sub.id}",
            detail={"what": "reference slice", "case": case_key},
        )
        session.commit()
    return label_slice_png(_nifti_copy(store, case.label_digest, cache), axis, index, outline=False)


# ---------------------------------------------------------------------------- distributions


def _finite(values: Mapping[str, Any], metric: str) -> tuple[list[float], int]:
    out: list[float] = []
    total = 0
    for per_case in values.values():
        if metric not in per_case:
            continue
        total += 1
        v = per_case[metric]
        if isinstance(v, int | float) and math.isfinite(v):
            out.append(float(v))
    return out, total


def distributions_svg(
    cases: Mapping[str, Mapping[str, Any]], *, max_metrics: int = 12, inline: bool = False
) -> str:
    """An SVG of each metric's distribution over the cases: box plot plus one dot per case.

    Non-finite values (a metric undefined on a case) are left out and counted in the
    panel's title. Metrics beyond ``max_metrics`` are not drawn (the table has them all).
    The dots of the i-th panel are the marks of the group ``case-points-<i>``. With
    ``inline``, the answer is the ``<svg>`` element alone, to put inside an HTML page.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    metrics: list[str] = []
    for per_case in cases.values():
        for m in per_case:
            if m not in metrics:
                metrics.append(m)
    metrics = metrics[:max_metrics]
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "medarena", "font.size": 9}):
        fig = Figure(figsize=(6.4, 0.3 + 0.9 * max(1, len(metrics))), layout="constrained")
        axes = fig.subplots(max(1, len(metrics)), 1, squeeze=False)[:, 0]
        if not metrics:
            axes[0].set_axis_off()
            axes[0].text(0.5, 0.5, "no per-case results", ha="center", va="center")
        for i, (ax, m) in enumerate(zip(axes, metrics, strict=False)):
            vals, total = _finite(cases, m)
            title = f"{m} (n={len(vals)}" + (f" of {total} finite)" if len(vals) < total else ")")
            ax.set_title(title, loc="left")
            ax.set_yticks([])
            if vals:
                ax.boxplot(vals, orientation="horizontal", widths=0.6, showfliers=False)
                # deterministic jitter so the same result always draws the same picture
                jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(vals))
                # one mark per case, grouped under a known id (pages and tests find them there)
                ax.scatter(
                    vals,
                    1 + jitter,
                    s=10,
                    alpha=0.7,
                    color="#0072b2",
                    zorder=3,
                    gid=f"{POINTS_ID}{i}",
                )
            else:
                ax.text(0.5, 0.5, "no finite value", transform=ax.transAxes, ha="center")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    # inline in HTML: the <svg> element alone, without the XML declaration and doctype
    return svg[svg.index("<svg") :] if inline else svg
