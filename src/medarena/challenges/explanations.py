"""Explanations of a model submission's predictions, stored for the cases its team may view.

After a model submission is scored on a **public** subset, the scoring job asks for one
follow-up job (kind ``explain_submission``, :func:`request_explanations`). The job runs the
submitted model again on those cases and stores, for each case, a map per explained output
with the explanation method of :mod:`medarena.lab.explain`:

- segmentation tracks: the model's **probability maps** (from the ONNX outputs before the
  argmax, one per foreground structure of ``outputs.names``);
- classification, multilabel and regression tracks: **Grad-CAM** when the submitted
  ``model.onnx`` is byte for byte the ONNX export of a lab registry model (the one-click
  submission of a lab model): the registry's PyTorch weights give the gradients; otherwise
  **occlusion sensitivity** run with ONNX Runtime, labelled as such (ONNX Runtime has no
  gradients). Classification explains the class the model scores highest, multilabel each
  label, regression its value.

The submitted model runs as in the scoring job: in the ONNX Runtime child process of
:mod:`medarena.challenges.model_sandbox` (the phase's memory limit, no network, no
credentials; each forward pass gets the phase's ``time_per_case_s``). Grad-CAM runs the
registry's PyTorch network in the worker: a network the lab built from its own blocks,
whose weights are loaded with ``weights_only`` (no pickled code).

Each case's maps are one uint8 NIfTI (values 0..255 with ``scl_slope`` 1/255, so readers see
[0, 1]) on the case's own grid (the case's affine; a 2-D case as one slice, maps along the
4th axis), stored in the object store like the predictions. An index (JSON, also in the
store) lists the cases, their maps and the method; its digest is the job's result, found
by :func:`explanation_index` for the submission's scored spec revision.

Hidden subsets get nothing: no job is asked for, and a job finding its subset hidden stores
nothing. A failure here never touches the submission's scores: the job is separate, a case
that fails is listed with its reason in the index, and the viewer says "no explanation".
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from medarena.challenges.archives import extract_archive
from medarena.challenges.data import subset_cases
from medarena.challenges.model_sandbox import ModelProcess
from medarena.challenges.service import find_track_phase, load_spec, subset_info
from medarena.config import get_settings
from medarena.db.platform_models import Challenge, Job, Submission
from medarena.errors import MedarenaError
from medarena.jobs import JobContext, enqueue
from medarena.lab.explain import METHOD_TITLES, Explanation, case_image, maps_nifti
from medarena.storage import LocalObjectStore, open_store

logger = logging.getLogger(__name__)

EXPLAIN_JOB_KIND = "explain_submission"
IMAGE_LEVEL_TASKS = ("classification", "multilabel", "regression")
EXPLAINED_TASKS = (*IMAGE_LEVEL_TASKS, "segmentation")
INDEX_FORMAT = 1


def _dedupe_key(submission_id: int, revision: int) -> str:
    return f"{submission_id}:{revision}"


def request_explanations(
    session_factory: sessionmaker[Session], submission_id: int, revision: int
) -> bool:
    """Queue the explanation job of a scored model submission if its subset is public.

    Never raises (an explanation must not fail scoring): a problem is logged and False
    returned. True when a job was queued (or already was).
    """
    try:
        with session_factory() as s, s.begin():
            sub = s.get(Submission, submission_id)
            if sub is None:
                return False
            challenge = s.get(Challenge, sub.challenge_id)
            assert challenge is not None
            spec = load_spec(challenge)
            track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
            subset = spec.scored_subset(track, phase)
            if track.task not in EXPLAINED_TASKS:
                return False
            if subset_info(s, track.dataset, track.split, subset).hidden:
                return False  # nobody on the team may view these cases: no work, nothing stored
            enqueue(
                s,
                EXPLAIN_JOB_KIND,
                {"submission_id": submission_id, "spec_revision": revision},
                dedupe_key=_dedupe_key(submission_id, revision),
                max_attempts=2,
            )
        return True
    except Exception:
        logger.exception("submission %d: could not queue its explanations", submission_id)
        return False


# ---------------------------------------------------------------------------- computing


def _registry_network(store: LocalObjectStore, session: Session, model_path: Path) -> Any:
    """The PyTorch network of the lab model whose ONNX export ``model_path`` is, or None."""
    from medarena.db.lab_models import LabModel
    from medarena.lab.explain import registry_network

    h = hashlib.sha256()  # the store's digest of the same bytes (nothing is stored)
    with open(model_path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    row = session.scalars(
        select(LabModel).where(LabModel.onnx_digest == digest).order_by(LabModel.id.desc())
    ).first()
    if row is None:
        return None
    return registry_network(store, row.recipe_yaml, row.weights_digest)


def _back_to_case_grid(
    maps: np.ndarray, shape: tuple[int, ...], affine: np.ndarray, orientation: str | None
) -> np.ndarray:
    """Maps on the model's input grid (n, *size) back on the case's grid (n, *shape).

    The manifest's preprocessing reorients (``inputs.orientation``), resamples and resizes;
    the resize and resampling keep the field of view, so a resize back is their inverse;
    the reorientation is undone with nibabel's orientation transforms.
    """
    from nibabel import orientations as ornt

    from medarena.lab.explain import resize_map

    if orientation and len(shape) == 3:
        start = ornt.io_orientation(affine)
        target = ornt.axcodes2ornt(tuple(orientation))
        forward = ornt.ornt_transform(start, target)
        oriented = ornt.apply_orientation(np.empty(shape, bool), forward).shape
        back = ornt.ornt_transform(target, start)
        return np.stack(
            [ornt.apply_orientation(resize_map(m, oriented), back) for m in maps]
        ).astype(np.float32)
    return np.stack([resize_map(m, shape) for m in maps]).astype(np.float32)


def _label_map(out: np.ndarray, m: Any, track: Any) -> np.ndarray:
    """The label map the scoring job writes from the same outputs (C, *spatial): the
    argmax to the track's label values, or the threshold of the single channel."""
    from medarena.challenges.models import label_values

    values = label_values(m, track)
    lut = np.array([0, *(values[n] for n in m.outputs.names)], dtype=np.uint8)
    if m.outputs.kind == "threshold":
        return np.where(out[0] >= m.outputs.threshold, lut[1], 0).astype(np.uint8)
    return np.asarray(lut[np.argmax(out, axis=0)], dtype=np.uint8)


Predict = Callable[[np.ndarray], np.ndarray]


def explain_case(
    predict: Predict,
    manifest: Any,
    track: Any,
    image: np.ndarray,
    affine: np.ndarray,
    network: Any = None,
) -> Explanation:
    """The explanation of one case (channel-first ``image``) on the case's grid.

    ``predict`` runs the submitted model on a batch (its first output): in the worker, the
    ONNX Runtime child process of :mod:`medarena.challenges.model_sandbox`. ``network`` is
    the registry's PyTorch network of the same model (Grad-CAM) or None (occlusion).
    """
    import torch

    from medarena.challenges.models import _preprocess
    from medarena.lab.explain import grad_cam, occlusion_maps, probability_maps

    x = _preprocess(image, affine, manifest)[None]
    names = list(manifest.outputs.names)
    if track.task == "segmentation":
        out = _sliding_window(predict, x, manifest)[0]
        if manifest.outputs.kind == "argmax":
            maps = probability_maps(out, "softmax")
        elif manifest.outputs.activation == "sigmoid":
            maps = probability_maps(out[:1], "sigmoid")
        else:
            maps = probability_maps(out[:1], "identity")
        return Explanation("probability", tuple(names), maps, _label_map(out, manifest, track))
    raw = np.asarray(predict(x)).reshape(-1)
    if track.task == "classification":
        targets = [int(np.argmax(raw))]
    elif track.task == "multilabel":
        targets = list(range(raw.size))
    else:
        targets = [0]
    out_maps = []
    if network is not None:
        xt = torch.from_numpy(x)
        layer = None  # found by the first target's pass, kept for the others
        for t in targets:
            cam, _index, layer = grad_cam(network, xt, class_index=t, target_layer=layer)
            out_maps.append(cam)
        method = "gradcam"
    else:
        # every target from one set of passes, one occluded copy at a time (the graph's
        # batch axis may be fixed)
        out_maps.extend(occlusion_maps(predict, x, targets, activation=manifest.outputs.activation))
        method = "occlusion"
    maps = _back_to_case_grid(
        np.stack(out_maps), tuple(image.shape[1:]), affine, manifest.inputs.orientation
    )
    return Explanation(method, tuple(names[t] for t in targets), maps)  # type: ignore[arg-type]


def _sliding_window(predict: Predict, x: np.ndarray, m: Any) -> np.ndarray:
    """The model's output channels over the whole case: MONAI's sliding-window inference
    with the model as the predictor, the windows and blending of the scoring job."""
    import torch
    from monai.inferers import sliding_window_inference

    def window(patch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(predict(patch.numpy())))

    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(x),
            roi_size=list(m.inputs.patch_size),
            sw_batch_size=1,
            predictor=window,
            overlap=m.inputs.overlap,
            mode="gaussian",
        )
    return np.asarray(out.numpy() if isinstance(out, torch.Tensor) else out)


@dataclass
class _Loaded:
    task: str
    hidden: bool
    cases: list[Any]
    archive_digest: str
    track: Any
    limits: Any  # the phase's ModelLimits


def _load(s: Session, sub_id: int) -> _Loaded | None:
    sub = s.get(Submission, sub_id)
    if sub is None:
        return None
    challenge = s.get(Challenge, sub.challenge_id)
    assert challenge is not None
    spec = load_spec(challenge)
    track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
    subset = spec.scored_subset(track, phase)
    hidden = subset_info(s, track.dataset, track.split, subset).hidden
    cases = [] if hidden else subset_cases(s, track.dataset, track.split, subset)
    return _Loaded(track.task, hidden, cases, sub.archive_digest, track, phase.model_limits)


def _labels_nifti(labels: np.ndarray, affine: np.ndarray) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(labels, affine).to_bytes(), mtime=0)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def explain_submission(ctx: JobContext) -> dict[str, Any]:
    """Job handler: compute and store the explanations of one submission (module doc)."""
    from medarena.challenges.models import MANIFEST_FILE, ManifestError, model_file, parse_manifest

    sub_id = int(ctx.payload["submission_id"])
    revision = int(ctx.payload.get("spec_revision", 1))
    settings = ctx.settings or get_settings()
    store = open_store(settings)
    with ctx.session_factory() as s:
        loaded = _load(s, sub_id)
        if loaded is not None:
            for c in loaded.cases:
                s.expunge(c)
    if loaded is None:
        return {"skipped": "submission no longer exists"}
    if loaded.hidden:
        return {"skipped": "the scored subset is hidden: nothing is explained"}
    index: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "submission_id": sub_id,
        "spec_revision": revision,
        "task": loaded.task,
        "method": None,
        "cases": {},
        "failed": {},
        "error": None,
    }
    work = Path(settings.data_dir) / "work"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"explain-{sub_id}-", dir=work))
    stack = contextlib.ExitStack()
    try:
        store.copy_to(loaded.archive_digest, tmp / "archive")
        files = tmp / "files"
        extract_archive(tmp / "archive", files)
        model_path = model_file(files)
        manifest_path = next((p for p in files.iterdir() if p.name.lower() == MANIFEST_FILE), None)
        if model_path is None or manifest_path is None:
            raise MedarenaError("not a model submission: there is nothing to explain")
        try:
            manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"))
        except ManifestError as exc:
            raise MedarenaError(str(exc)) from None
        # the model runs where the scoring job runs it: in a child process with the phase's
        # memory limit, no network and no credentials; each forward pass has the time of a case
        limits = loaded.limits
        proc = ModelProcess(model_path, limits.memory_mb, tmp, 60 + limits.time_per_case_s)
        stack.callback(proc.close)

        def predict(a: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(a, dtype=np.float32)
            return proc.run(x, time.monotonic() + limits.time_per_case_s)

        network = None
        if loaded.task in IMAGE_LEVEL_TASKS:
            with ctx.session_factory() as s:
                network = _registry_network(store, s, model_path)
        ndim = manifest.inputs.spatial_dims
        for i, case in enumerate(loaded.cases):
            try:
                image, affine = case_image(store, case, ndim)
                exp = explain_case(predict, manifest, loaded.track, image, affine, network)
                digest = store.put_bytes(maps_nifti(exp.maps, affine))
                entry: dict[str, Any] = {"digest": digest, "maps": list(exp.names)}
                if exp.labels is not None:  # the public case's prediction, for the viewer
                    entry["prediction"] = store.put_bytes(_labels_nifti(exp.labels, affine))
                index["cases"][case.case_key] = entry
                index["method"] = exp.method
            except Exception as exc:  # one case's failure is recorded, the others go on
                logger.warning("submission %d: explanation of case %d failed", sub_id, i + 1)
                index["failed"][case.case_key] = _short(exc)
            ctx.progress((i + 1) / max(1, len(loaded.cases)))
    except Exception as exc:
        logger.warning("submission %d: no explanations (%s)", sub_id, type(exc).__name__)
        index["error"] = _short(exc)
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
    digest = store.put_bytes(json.dumps(index, indent=1, sort_keys=True).encode())
    logger.info(
        "submission %d: %d case(s) explained, %d failed",
        sub_id,
        len(index["cases"]),
        len(index["failed"]),
    )
    return {"submission_id": sub_id, "index_digest": digest}


HANDLERS = {EXPLAIN_JOB_KIND: explain_submission}


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CaseExplanation:
    """The stored explanation of one case: its NIfTI, map names and method."""

    digest: str
    maps: tuple[str, ...]
    method: str
    prediction: str | None = None  # segmentation models: the predicted label map's digest

    @property
    def title(self) -> str:
        return METHOD_TITLES.get(self.method, self.method)


def explanation_index(
    session: Session, store: LocalObjectStore, sub: Submission
) -> dict[str, Any] | None:
    """The stored index of a submission's explanations for its scored revision, or None."""
    result = session.scalar(
        select(Job.result).where(
            Job.kind == EXPLAIN_JOB_KIND,
            Job.dedupe_key == _dedupe_key(sub.id, sub.score_revision),
            Job.state == "done",
        )
    )
    digest = (result or {}).get("index_digest")
    if not isinstance(digest, str):
        return None
    try:
        data = json.loads(store.get_bytes(digest))
    except MedarenaError:
        logger.warning("submission %d: its explanation index is missing", sub.id)
        return None
    return data if isinstance(data, dict) else None


def case_explanation(
    session: Session, store: LocalObjectStore, sub: Submission, case_key: str
) -> CaseExplanation | None:
    """The explanation of one case of a submission, None when there is none.

    Callers check first that the user may view the case
    (:func:`medarena.challenges.viewer.viewer_case`); this only looks it up.
    """
    index = explanation_index(session, store, sub)
    if index is None:
        return None
    entry = index.get("cases", {}).get(case_key)
    if not isinstance(entry, dict):
        return None
    prediction = entry.get("prediction")
    return CaseExplanation(
        str(entry["digest"]),
        tuple(str(m) for m in entry["maps"]),
        str(index["method"]),
        prediction if isinstance(prediction, str) else None,
    )
