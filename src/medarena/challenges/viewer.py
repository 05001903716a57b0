"""What a submission's detail pages draw: slices of a case and metric distributions.

Two things, both server-rendered so the pages need no JavaScript build:

- **slices** of an image task's case as PNG: the image in grey levels, and the reference
  and the prediction as transparent overlays to stack on it (reference filled, prediction
  outlined, one colour per label value), for one axis and slice index; the cases of
  classification, multilabel and regression tracks show their image alone;
- the **explanation** of a model submission's case (:mod:`medarena.challenges.explanations`:
  a Grad-CAM, occlusion or probability map) as a transparent heat map over the slice
  (colour map "inferno", opacity growing with the value), where one was stored;
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
import gzip
import io
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import nibabel as nib
import numpy as np
from sqlalchemy.orm import Session

from medarena.challenges.archives import extract_archive
from medarena.challenges.data import hidden_in_any_split, subset_cases
from medarena.challenges.service import find_track_phase, load_spec, subset_info
from medarena.db.platform_models import Challenge, Submission, User
from medarena.errors import InputError, NotFoundError
from medarena.evaluation import tasks as tasks_mod
from medarena.storage import LocalObjectStore

logger = logging.getLogger(__name__)

Layer = Literal["image", "reference", "prediction", "explanation"]
LAYERS: tuple[Layer, ...] = ("image", "reference", "prediction", "explanation")
# tracks scored per case from a table whose cases still have images to look at
IMAGE_LEVEL_TASKS = ("classification", "multilabel", "regression")
HEAT_CMAP = "inferno"
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
    channels: tuple[tuple[str, str], ...]  # (stored name, digest) of each image channel
    label_digest: str | None
    hidden: bool
    label_maps: bool = True  # the task has reference and prediction label maps

    def channel_digest(self, channel: int) -> str:
        """Digest of image channel ``channel`` (InputError naming the valid range)."""
        if not 0 <= channel < len(self.channels):
            raise InputError(
                f"channel must be between 0 and {len(self.channels) - 1}",
                path="channel",
                value=channel,
            )
        return self.channels[channel][1]


@dataclass(frozen=True)
class ViewerContext:
    """Which cases of a submission a user may view, and whether its task has images."""

    task: str
    image_task: bool  # the cases have images to view
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
    image_task = _viewable_task(track.task)
    keys: list[str] = []
    if image_task and (not hidden or _can_review(session, user, challenge.id)):
        cases = subset_cases(session, track.dataset, track.split, subset)
        keys = [c.case_key for c in cases if any(o.role in _IMAGE_ROLES for o in c.objects)]
        image_task = bool(keys) or track.task not in IMAGE_LEVEL_TASKS
    return ViewerContext(track.task, image_task, hidden, keys)


def _viewable_task(task: str) -> bool:
    return (task in tasks_mod.IMAGE_TASKS and task != "dose") or task in IMAGE_LEVEL_TASKS


def viewer_case(session: Session, sub: Submission, user: User, case_key: str) -> ViewerCase:
    """One case the user may view, else NotFoundError (the same answer for every refusal)."""
    challenge = session.get(Challenge, sub.challenge_id)
    assert challenge is not None
    spec = load_spec(challenge)
    track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
    not_found = NotFoundError(f"no viewable case {case_key!r} in submission {sub.id}")
    if not _viewable_task(track.task):
        raise not_found
    subset = spec.scored_subset(track, phase)
    hidden = subset_info(session, track.dataset, track.split, subset).hidden
    if hidden and not _can_review(session, user, challenge.id):
        raise not_found
    for c in subset_cases(session, track.dataset, track.split, subset):
        if c.case_key != case_key:
            continue
        # multi-channel cases (BraTS: four MRI sequences) are stored as <case>_0000, _0001 ...
        images = sorted((o.name, o.digest) for o in c.objects if o.role in _IMAGE_ROLES)
        labels = [o.digest for o in c.objects if o.role in _LABEL_ROLES]
        if not images:
            raise not_found
        label_maps = track.task not in IMAGE_LEVEL_TASKS
        label = labels[0] if len(labels) == 1 and label_maps else None
        # a public case here that another split hides (another challenge's test case):
        # its reference stays a secret, as in the dataset pages and downloads
        if (
            label is not None
            and not hidden
            and not user.is_admin
            and hidden_in_any_split(session, [c.id])
        ):
            label = None
        return ViewerCase(case_key, tuple(images), label, hidden, label_maps)
    raise not_found


# ---------------------------------------------------------------------------- volumes


def _cache_dir(data_dir: Path) -> Path:
    d = Path(data_dir) / "work" / "viewer"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_once(path: Path, source: BinaryIO) -> None:
    """Write ``source`` (decompressed if gzip) to ``path`` atomically, unless it exists."""
    if path.exists():
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            head = source.read(2)
            source.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=source) as inflated:
                    shutil.copyfileobj(inflated, out, 1 << 20)
            else:
                shutil.copyfileobj(source, out, 1 << 20)
        Path(tmp_name).replace(path)  # atomic: a concurrent request sees the whole file or none
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _nifti_copy(store: LocalObjectStore, digest: str, cache: Path) -> Path:
    """The stored object as an uncompressed NIfTI file (content-addressed, so cached).

    Uncompressed, so that a slice reads only its own voxels (nibabel maps the file)
    instead of inflating the whole volume on every request.
    """
    path = cache / f"{digest}.nii"
    if not path.exists():
        with store.open(digest) as fh:
            _write_once(path, fh)
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
            raw = cache / f"{sub.archive_digest}.raw"
            raw.mkdir(exist_ok=True)
            path = raw / f"{case_key}.nii"
            if not path.exists():
                with open(p, "rb") as fh:
                    _write_once(path, fh)
            return path
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
    return volume_shape(_nifti_copy(store, case.channel_digest(0), _cache_dir(data_dir)))


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


def read_slice(path: Path, axis: int, index: int) -> tuple[np.ndarray, tuple[float, float]]:
    """One slice of a NIfTI volume (only its voxels are read) and its in-plane spacing."""
    try:
        img = nib.nifti1.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"cannot read the NIfTI file ({exc})", path=path.name) from None
    shape = tuple(int(n) for n in img.shape)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(shape) == 2:
        shape, zooms = (*shape, 1), (*zooms[:2], 1.0)
    if len(shape) != 3:
        raise InputError(f"expected a 3-D image, got {len(shape)} dimensions", path=path.name)
    check_slice(shape, axis, index)
    if len(img.shape) == 2:
        plane = np.asarray(img.dataobj)
    else:
        where: list[int | slice] = [slice(None)] * 3
        where[axis] = index
        plane = np.asarray(img.dataobj[tuple(where)])
    sx, sy = (z for i, z in enumerate(zooms) if i != axis)
    return plane, (sx, sy)


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


def _upright(plane: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """A slice upright (second axis upwards) and scaled up (nearest) for its spacing."""
    sx, sy = spacing
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


def _colour_slice_png(img: Any, axis: int, index: int) -> bytes:
    """An RGB PNG of one slice of a 4-D (x, y, z, channel) image: a colour photograph
    (fundus) stored as ingest stores 2-D RGB images, one slice with 3 channels. Other
    channel counts are shown as the channels' mean, in grey levels."""
    shape = tuple(int(n) for n in img.shape)
    check_slice(shape[:3], axis, index)
    where: list[int | slice] = [slice(None)] * 3
    where[axis] = index
    plane = np.asarray(img.dataobj[tuple(where)], dtype=np.float64)  # (a, b, channels)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    sx, sy = (z for i, z in enumerate(zooms) if i != axis)
    if img.get_data_dtype() == np.uint8:
        lo, hi = 0.0, 255.0
    else:
        finite = np.asarray(img.dataobj, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        lo, hi = (float(v) for v in np.percentile(finite, [1, 99])) if finite.size else (0, 1)
        hi = hi if hi > lo else lo + 1.0
    plane = np.nan_to_num(plane, nan=lo, posinf=hi, neginf=lo)
    scaled = np.clip((plane - lo) / (hi - lo) * 255.0, 0, 255)
    if scaled.shape[-1] != 3:
        grey = _upright(scaled.mean(axis=-1), (sx, sy)).astype(np.uint8)
        return _png(grey)
    rgb = np.stack([_upright(scaled[..., c], (sx, sy)) for c in range(3)], axis=-1)
    return _png(rgb.astype(np.uint8))


def image_slice_png(path: Path, axis: int, index: int) -> bytes:
    """A grey-level PNG of one slice of the image at ``path`` (RGB for colour images)."""
    try:
        img = nib.nifti1.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"cannot read the NIfTI file ({exc})", path=path.name) from None
    if len(img.shape) == 4:
        return _colour_slice_png(img, axis, index)
    plane, spacing = read_slice(path, axis, index)
    lo, hi = _window(str(path))
    plane = _upright(np.asarray(plane, dtype=np.float64), spacing)
    plane = np.nan_to_num(plane, nan=lo, posinf=hi, neginf=lo)
    grey = np.clip((plane - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    return _png(grey)


def label_slice_png(path: Path, axis: int, index: int, *, outline: bool) -> bytes:
    """A transparent RGBA PNG of one slice of a label map: filled, or outlined."""
    plane, spacing = read_slice(path, axis, index)
    labels = _upright(
        np.rint(np.nan_to_num(np.asarray(plane, np.float64))).astype(np.int64), spacing
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


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """RGB (uint8) of values in [0, 1] on the heat colour map."""
    from matplotlib import colormaps

    rgba = colormaps[HEAT_CMAP](np.clip(values, 0.0, 1.0))
    return np.asarray(np.rint(rgba[..., :3] * 255), dtype=np.uint8)


def heat_legend_css() -> str:
    """A CSS linear-gradient of the heat colour map from 0 (left) to 1 (right)."""
    stops = _heat_colours(np.linspace(0.0, 1.0, 9))
    return (
        "linear-gradient(to right, "
        + ", ".join(f"rgb({r}, {g}, {b}) {i * 12.5:g}%" for i, (r, g, b) in enumerate(stops))
        + ")"
    )


def heatmap_slice_png(path: Path, axis: int, index: int, map_index: int = 0) -> bytes:
    """A transparent RGBA PNG of one slice of map ``map_index`` of an explanation NIfTI.

    The file holds maps in [0, 1] along its 4th axis (:func:`explanations.maps_nifti`).
    A voxel's colour is the heat colour map's and its opacity grows with its value
    (0 is transparent), so the image stays visible where the model found nothing. A 2-D
    map (one slice) is drawn on every slice of axis 2 (an RGB image's channels).
    """
    try:
        img = nib.nifti1.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"cannot read the NIfTI file ({exc})", path=path.name) from None
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4:
        raise InputError(f"expected 4-D explanation maps, got {len(shape)} axes", path=path.name)
    if not 0 <= map_index < shape[3]:
        raise InputError(f"map must be between 0 and {shape[3] - 1}", path="map", value=map_index)
    if axis == 2 and shape[2] == 1:
        index = 0
    check_slice(shape[:3], axis, index)
    where: list[int | slice] = [slice(None)] * 3
    where[axis] = index
    proxy = img.dataobj
    plane = np.asarray(proxy[(*where, map_index)] if len(img.shape) == 4 else proxy[tuple(where)])
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    spacing = tuple(z for i, z in enumerate(zooms) if i != axis)
    values = _upright(np.nan_to_num(np.asarray(plane, np.float64)), (spacing[0], spacing[1]))
    values = np.clip(values, 0.0, 1.0)
    rgba = np.zeros((*values.shape, 4), np.uint8)
    rgba[..., :3] = _heat_colours(values)
    rgba[..., 3] = np.rint(np.clip(values * 1.25, 0.0, 1.0) * 255).astype(np.uint8)
    return _png(rgba)


def _model_prediction(
    session: Session, store: LocalObjectStore, sub: Submission, case_key: str, cache: Path
) -> Path:
    """A model submission's label map of a public case: its archive holds none, the
    explanation job stores one per public case (computed like the scoring job's)."""
    from medarena.challenges.explanations import case_explanation

    exp = case_explanation(session, store, sub, case_key)
    if exp is None or exp.prediction is None:
        raise NotFoundError(
            f"submission {sub.id} has no prediction for case {case_key!r} yet (a model's "
            "predictions of public cases are stored with its explanations)"
        )
    return _nifti_copy(store, exp.prediction, cache)


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
    channel: int = 0,
    map_index: int = 0,
) -> bytes:
    """The PNG of one layer of one slice of a case the user may view (see the module doc).

    ``channel`` picks the image of a multi-channel case (0 for single-channel ones),
    ``map_index`` the explanation map (one per explained class or structure).
    """
    if layer not in LAYERS:
        raise InputError(f"layer must be one of {', '.join(LAYERS)}", path="layer", value=layer)
    case = viewer_case(session, sub, user, case_key)
    cache = _cache_dir(data_dir)
    if layer == "image":
        digest = case.channel_digest(channel)
        return image_slice_png(_nifti_copy(store, digest, cache), axis, index)
    if layer == "explanation":
        from medarena.challenges.explanations import case_explanation

        exp = case_explanation(session, store, sub, case_key)
        if exp is None:
            raise NotFoundError(f"case {case_key!r} of submission {sub.id} has no explanation")
        return heatmap_slice_png(_nifti_copy(store, exp.digest, cache), axis, index, map_index)
    if not case.label_maps:
        raise NotFoundError(f"the {layer} of case {case_key!r} is not a label map")
    if layer == "prediction":
        try:
            path = prediction_file(store, sub, case_key, data_dir)
        except NotFoundError:
            if sub.kind != "model":
                raise
            path = _model_prediction(session, store, sub, case_key, cache)
        return label_slice_png(path, axis, index, outline=True)
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
