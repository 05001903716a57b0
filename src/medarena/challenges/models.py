"""Model submissions: an ONNX file plus a manifest, run by ONNX Runtime in the worker.

Where a phase lists ``model`` in ``submission_kinds``, a team uploads an archive holding
``model.onnx`` and ``manifest.yaml`` instead of predictions. :func:`check_model_archive`
refuses at upload, with every problem listed: a manifest that does not validate (each
problem names its YAML line and field, :mod:`medarena.yamlerrors`), a model above the
phase's ``model_limits.max_model_mb``, a file ``onnx.checker`` rejects, a graph ONNX
Runtime's CPU provider cannot load (unsupported operators), and an input whose rank or
channel count disagrees with the manifest and the track.

The scoring job calls :func:`predict_cases`: every scored case (hidden ones included) is
read from the object store, preprocessed with the lab's blocks named in the manifest
(orientation, spacing, intensity normalisation), resized to ``inputs.size`` and run
through ONNX Runtime (CPU provider only, one intra-op thread; ORT opens no socket). The
outputs become exactly the file a predictions archive would hold, which the existing
scoring path then scores. A case over ``time_per_case_s``, a non-finite output or an
output of the wrong shape fails the submission naming the case. The predictions of hidden
cases live only in the job's temporary folder and are never stored.

Supported so far: image-level tracks: regression (one value per case, the track's
``value_column``), classification and multilabel (one score per class or label, optionally
through a softmax or sigmoid). Segmentation (sliding windows) is not yet.
"""

from __future__ import annotations

import csv
import resource
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medarena.challenges.archives import ExtractedFile
from medarena.challenges.spec import ModelLimits, Track
from medarena.errors import InputError, UserInputError
from medarena.imaging.nifti import read_nifti
from medarena.storage import LocalObjectStore
from medarena.yamlerrors import YamlProblem, field_name, parse_mapping, problem_at

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.yaml"
MODEL_TASKS = ("regression", "classification", "multilabel", "segmentation")
# deterministic preprocessing blocks of the lab (medarena.lab.blocks) a manifest may name
NORMALISATION_BLOCKS = ("ct_window", "zscore", "scale_range")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BlockRef(_Strict):
    block: Literal["ct_window", "zscore", "scale_range"]
    params: dict[str, Any] = Field(default_factory=dict)


class Inputs(_Strict):
    channels: list[str] = Field(
        min_length=1, description="Modality of each input channel, in the case's image order."
    )
    spatial_dims: Literal[2, 3] = 3
    orientation: str | None = Field(None, pattern=r"^[LRAPIS]{2,3}$")
    spacing: list[float] | None = Field(None, min_length=2, max_length=3)
    normalisation: list[BlockRef] = Field(default_factory=list)
    size: list[int] | None = Field(
        None, min_length=2, max_length=3, description="Image-level: the image is resized to it."
    )
    patch_size: list[int] | None = Field(
        None, min_length=2, max_length=3, description="Segmentation: the sliding window's size."
    )
    overlap: float = Field(0.25, ge=0, lt=1)


class Outputs(_Strict):
    kind: Literal["value", "scores", "argmax", "threshold"] = Field(
        description="value: one number per output name (regression); scores: class or "
        "label scores, one per name (classification, multilabel); argmax: segmentation, "
        "channel 0 background and channel i the structure names[i-1]; threshold: "
        "segmentation, one channel, >= threshold is names[0]."
    )
    threshold: float = 0.5
    names: list[str] = Field(min_length=1, description="The predictions CSV's columns.")
    activation: Literal["none", "softmax", "sigmoid"] = Field(
        "none", description="Applied to the model's output vector before it is written."
    )


class Manifest(_Strict):
    format: Literal[1] = 1
    inputs: Inputs
    outputs: Outputs


class ManifestError(InputError):
    """A manifest.yaml that does not validate; ``problems`` has a line and field each."""

    def __init__(self, source: str, problems: list[YamlProblem]) -> None:
        self.problems = problems
        super().__init__(f"invalid manifest: {'; '.join(str(p) for p in problems)}", path=source)


def parse_manifest(text: str, source: str = MANIFEST_FILE) -> Manifest:
    """The manifest of ``text``; ManifestError listing every problem with its line."""
    root, data = parse_mapping(text, source, "manifest", ManifestError)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            value = "" if err["type"] == "missing" else f"{err.get('input')!r}: "
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(problem_at(root, loc, value + msg, missing=err["type"] == "missing"))
        raise ManifestError(source, problems) from None


def is_model_archive(files: list[ExtractedFile]) -> bool:
    """Whether an extracted archive is a model submission (it holds model.onnx)."""
    return any(f.path.name.lower() == MODEL_FILE for f in files)


def model_file(files_dir: Path) -> Path | None:
    """The model.onnx of an extracted archive (names compared case-insensitively)."""
    return next((p for p in files_dir.iterdir() if p.name.lower() == MODEL_FILE), None)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _expected_outputs(track: Track) -> tuple[str, list[str] | None]:
    """(output kind, the CSV columns the track needs, None when any names will do)."""
    cfg = track.task_config
    if track.task == "segmentation":
        return "argmax", None
    if track.task == "regression":
        return "value", [str(cfg.get("value_column", "value"))]
    if track.task == "multilabel":
        labels = cfg.get("labels")
        return "scores", None if labels is None else [str(v) for v in labels]
    names = cfg.get("class_names")
    if cfg.get("mode", "binary") == "binary":
        return "scores", ["score"] if names is None else None
    return "scores", None if names is None else [str(v) for v in names]


def _manifest_track_problems(m: Manifest, track: Track) -> list[str]:
    problems = []
    if track.task not in MODEL_TASKS:
        problems.append(
            f"track {track.slug!r} is a {track.task} track; model submissions are scored "
            f"for {', '.join(MODEL_TASKS)} tracks so far"
        )
        return problems
    kind, names = _expected_outputs(track)
    if track.task == "segmentation":
        return _segmentation_problems(m, track)
    if m.outputs.kind != kind or (names is not None and m.outputs.names != names):
        want = "" if names is None else f" and names {names}"
        problems.append(
            f"{MANIFEST_FILE}: field outputs: a {track.task} track needs kind {kind!r}{want} "
            f"(got kind {m.outputs.kind!r}, names {m.outputs.names})"
        )
    if m.inputs.size is None:
        problems.append(f"{MANIFEST_FILE}: field inputs.size: an image-level model needs it")
    elif len(m.inputs.size) != m.inputs.spatial_dims:
        problems.append(
            f"{MANIFEST_FILE}: field inputs.size: {m.inputs.size} has "
            f"{len(m.inputs.size)} axes but inputs.spatial_dims is {m.inputs.spatial_dims}"
        )
    return problems


def label_values(m: Manifest, track: Track) -> dict[str, int]:
    """Output name -> label value written in the predicted map (the track's labels)."""
    labels = track.task_config.get("labels") or {}
    return {n: int(labels[n]) if n in labels else int(n) for n in m.outputs.names}


def _segmentation_problems(m: Manifest, track: Track) -> list[str]:
    problems = []
    if m.outputs.kind not in ("argmax", "threshold"):
        problems.append(
            f"{MANIFEST_FILE}: field outputs.kind: {m.outputs.kind!r}; a segmentation track "
            "needs 'argmax' or 'threshold'"
        )
    if m.outputs.kind == "threshold" and len(m.outputs.names) != 1:
        problems.append(f"{MANIFEST_FILE}: field outputs.names: threshold maps to one name")
    labels = track.task_config.get("labels") or {}
    bad = [n for n in m.outputs.names if n not in labels and not n.isdigit()]
    if bad:
        problems.append(
            f"{MANIFEST_FILE}: field outputs.names: {bad} are neither the track's structures "
            f"({', '.join(labels) or 'none named'}) nor label values"
        )
    if m.inputs.patch_size is None:
        problems.append(f"{MANIFEST_FILE}: field inputs.patch_size: segmentation needs it")
    elif len(m.inputs.patch_size) != m.inputs.spatial_dims:
        problems.append(
            f"{MANIFEST_FILE}: field inputs.patch_size: {m.inputs.patch_size} has "
            f"{len(m.inputs.patch_size)} axes but inputs.spatial_dims is {m.inputs.spatial_dims}"
        )
    for field in ("orientation", "spacing", "size"):
        if getattr(m.inputs, field) is not None:
            problems.append(
                f"{MANIFEST_FILE}: field inputs.{field}: not supported for segmentation yet "
                "(predictions must stay on the case's own grid)"
            )
    return problems


def _activate(v: np.ndarray, activation: str) -> np.ndarray:
    v = v.astype(np.float64)
    if activation == "softmax":
        e = np.exp(v - v.max())
        return np.asarray(e / e.sum())
    if activation == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-v)))
    return v


def _input_problems(session: Any, m: Manifest) -> list[str]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        return [f"{MODEL_FILE}: the graph has {len(inputs)} inputs; exactly one is needed"]
    shape = list(inputs[0].shape)
    want = 2 + m.inputs.spatial_dims
    if len(shape) != want:
        return [
            f"{MODEL_FILE}: input {inputs[0].name!r} has rank {len(shape)} {shape}; the "
            f"manifest's {m.inputs.spatial_dims}D input needs rank {want} "
            "(batch, channels, spatial axes)"
        ]
    problems = []
    channels = shape[1]
    if isinstance(channels, int) and channels != len(m.inputs.channels):
        problems.append(
            f"{MODEL_FILE}: input {inputs[0].name!r} has {channels} channels but "
            f"manifest inputs.channels lists {len(m.inputs.channels)}"
        )
    spatial = m.inputs.size or m.inputs.patch_size or []
    for axis, (got, size) in enumerate(zip(shape[2:], spatial, strict=False)):
        if isinstance(got, int) and got != size:
            problems.append(
                f"{MODEL_FILE}: input spatial axis {axis} is {got} but manifest "
                f"inputs.size / inputs.patch_size says {size}"
            )
    return problems


def check_model_archive(files: list[ExtractedFile], track: Track, limits: ModelLimits) -> list[str]:
    """Every problem of an extracted model archive (empty when it is acceptable)."""
    by_name = {f.path.name.lower(): f for f in files}
    problems: list[str] = []
    extra = sorted(
        f.member for f in files if f.path.name.lower() not in (MODEL_FILE, MANIFEST_FILE)
    )
    if extra:
        problems.append(
            f"a model archive holds only {MODEL_FILE} and {MANIFEST_FILE}; unexpected: "
            + ", ".join(extra[:10])
        )
    manifest: Manifest | None = None
    if MANIFEST_FILE not in by_name:
        problems.append(f"{MANIFEST_FILE} is missing (a model archive needs one)")
    else:
        try:
            text = by_name[MANIFEST_FILE].path.read_text(encoding="utf-8")
            manifest = parse_manifest(text)
        except UnicodeDecodeError:
            problems.append(f"{MANIFEST_FILE}: not UTF-8 text")
        except ManifestError as exc:
            problems += [f"{MANIFEST_FILE}: {p}" for p in exc.problems]
        if manifest is not None:
            problems += _manifest_track_problems(manifest, track)
    model = by_name[MODEL_FILE]
    cap = int(limits.max_model_mb * 1024 * 1024)
    if model.size > cap:
        problems.append(
            f"{MODEL_FILE}: {model.size} bytes, above this phase's model_limits.max_model_mb "
            f"of {limits.max_model_mb:g} MB"
        )
        return problems
    import onnx

    try:
        onnx.checker.check_model(str(model.path))
    except Exception as exc:  # onnx raises several kinds (ValidationError, DecodeError...)
        problems.append(f"{MODEL_FILE}: onnx.checker refused the model: {_short(exc)}")
        return problems
    try:
        session = _session(model.path)
    except Exception as exc:  # ORT raises its own classes (Fail, NotImplemented...)
        problems.append(
            f"{MODEL_FILE}: ONNX Runtime's CPU provider cannot load the model "
            f"(an unsupported operator or type?): {_short(exc)}"
        )
        return problems
    if manifest is not None:
        problems += _input_problems(session, manifest)
    return problems


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _preprocess(image: np.ndarray, affine: np.ndarray, m: Manifest) -> np.ndarray:
    """The lab's blocks on one case (channel-first array), then resize to inputs.size."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Resized

    from medarena.lab.blocks import REGISTRY, Context

    ndim = m.inputs.spatial_dims
    ctx = Context("classification", ndim, len(m.inputs.channels))
    steps: list[Any] = []
    if m.inputs.orientation:
        steps.append(
            REGISTRY["orientation"].build(
                _params("orientation", {"axcodes": m.inputs.orientation}), ctx
            )
        )
    if m.inputs.spacing:
        steps.append(
            REGISTRY["spacing"].build(_params("spacing", {"pixdim": m.inputs.spacing}), ctx)
        )
    for ref in m.inputs.normalisation:
        steps.append(REGISTRY[ref.block].build(_params(ref.block, ref.params), ctx))
    if m.inputs.size is not None:
        steps.append(Resized(keys=("image",), spatial_size=list(m.inputs.size), mode="area"))
    d: dict[str, Any] = {
        "image": MetaTensor(
            torch.from_numpy(image), affine=torch.as_tensor(affine, dtype=torch.float64)
        )
    }
    for step in steps:
        d = step(d)
    out = d["image"]
    return np.asarray(out.as_tensor() if isinstance(out, MetaTensor) else out, dtype=np.float32)


def _params(block: str, values: dict[str, Any]) -> Any:
    from medarena.lab.blocks import REGISTRY

    try:
        return REGISTRY[block].params.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserInputError(
            f"{MANIFEST_FILE}: block {block!r} parameter {field_name(tuple(first['loc']))}: "
            f"{first['msg']}"
        ) from None


def _case_image(store: LocalObjectStore, case: Any, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    objs = sorted((o for o in case.objects if o.role == "image"), key=lambda o: o.name)
    if not objs:
        raise RuntimeError(f"case {case.case_key!r} has no image object")
    channels, affine = [], None
    for o in objs:
        img = read_nifti(store.path_of(o.digest))
        arr = img.array.astype(np.float32)
        channels.append(arr[None] if arr.ndim == ndim else np.moveaxis(arr, -1, 0))
        affine = img.nifti_affine() if affine is None else affine
    assert affine is not None
    return np.concatenate(channels, axis=0), affine


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def predict_cases(
    files_dir: Path,
    store: LocalObjectStore,
    cases: list[Any],
    track: Track,
    limits: ModelLimits,
    dest: Path,
    progress: Any = None,
) -> Path:
    """Run the model of ``files_dir`` on ``cases``; the predictions file it wrote in ``dest``.

    Raises UserInputError (the submission fails with that reason, no retry) for a model
    over a limit, a non-finite or misshapen output, or a case whose channels disagree
    with the manifest.
    """
    model_path = model_file(files_dir)
    manifest_path = next((p for p in files_dir.iterdir() if p.name.lower() == MANIFEST_FILE), None)
    if model_path is None or manifest_path is None:
        raise UserInputError(f"a model archive needs {MODEL_FILE} and {MANIFEST_FILE}")
    try:
        manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"))
    except ManifestError as exc:
        raise UserInputError(str(exc)) from None
    session = _session(model_path)
    name = session.get_inputs()[0].name
    columns = manifest.outputs.names
    ndim = manifest.inputs.spatial_dims
    rss_before = _peak_rss_mb()
    segmentation = track.task == "segmentation"
    dest.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    for i, case in enumerate(cases):
        image, affine = _case_image(store, case, ndim)
        if image.shape[0] != len(manifest.inputs.channels):
            raise UserInputError(
                f"case {case.case_key}: the track's images have {image.shape[0]} channel(s) "
                f"but the manifest lists {len(manifest.inputs.channels)}"
            )
        start = time.monotonic()
        x = _preprocess(image, affine, manifest)[None]
        try:
            if segmentation:
                out = _sliding_window(session, name, x, manifest)
            else:
                out = np.asarray(session.run(None, {name: x})[0])
        except UserInputError as exc:
            raise UserInputError(f"case {case.case_key}: {exc}") from None
        except Exception as exc:  # ORT's own error classes
            raise UserInputError(
                f"case {case.case_key}: ONNX Runtime failed: {_short(exc)}"
            ) from None
        elapsed = time.monotonic() - start
        if elapsed > limits.time_per_case_s:
            raise UserInputError(
                f"case {case.case_key}: inference took {elapsed:.1f} s, above this phase's "
                f"model_limits.time_per_case_s of {limits.time_per_case_s:g} s"
            )
        grown = _peak_rss_mb() - rss_before
        if grown > limits.memory_mb:
            raise UserInputError(
                f"case {case.case_key}: inference grew the worker's memory by {grown:.0f} MB, "
                f"above this phase's model_limits.memory_mb of {limits.memory_mb} MB"
            )
        if segmentation:
            _write_label_map(out, image.shape[1:], affine, case.case_key, manifest, track, dest)
            if progress is not None:
                progress(i + 1, len(cases))
            continue
        if out.size != len(columns):
            raise UserInputError(
                f"case {case.case_key}: output shape {list(out.shape)}; the manifest's "
                f"outputs.names need {len(columns)} value(s) per case (shape [1, {len(columns)}])"
            )
        raw = out.reshape(-1)
        if not np.all(np.isfinite(raw)):
            raise UserInputError(
                f"case {case.case_key}: the model's output is not finite "
                f"({', '.join(str(float(v)) for v in raw[:5])}); "
                "NaN and infinite outputs are not scored"
            )
        values = _activate(raw, manifest.outputs.activation)
        rows.append([case.case_key, *(repr(float(v)) for v in values)])
        if progress is not None:
            progress(i + 1, len(cases))
    if segmentation:
        return dest
    path = dest / "predictions.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", *columns])
        w.writerows(rows)
    return path


def _sliding_window(session: Any, name: str, x: np.ndarray, m: Manifest) -> np.ndarray:
    """MONAI's sliding-window inference with ONNX Runtime as the predictor (channels out)."""
    import torch
    from monai.inferers import sliding_window_inference

    assert m.inputs.patch_size is not None

    def predict(patch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(None, {name: patch.numpy()})[0]))

    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(x),
            roi_size=list(m.inputs.patch_size),
            sw_batch_size=1,
            predictor=predict,
            overlap=m.inputs.overlap,
            mode="gaussian",
        )
    return np.asarray(out.numpy() if isinstance(out, torch.Tensor) else out)


def _write_label_map(
    out: np.ndarray,
    shape: tuple[int, ...],
    affine: np.ndarray,
    key: str,
    m: Manifest,
    track: Track,
    dest: Path,
) -> None:
    """The predicted label map of one case as ``<case>.nii.gz`` on the case's grid."""
    import nibabel as nib

    want = 1 if m.outputs.kind == "threshold" else len(m.outputs.names) + 1
    if out.ndim != len(shape) + 2 or out.shape[1] != want or tuple(out.shape[2:]) != shape:
        raise UserInputError(
            f"case {key}: output shape {list(out.shape)}; expected [1, {want}, "
            f"{', '.join(map(str, shape))}] (outputs.kind {m.outputs.kind!r}, "
            f"{len(m.outputs.names)} name(s))"
        )
    if not np.all(np.isfinite(out)):
        raise UserInputError(
            f"case {key}: the model's output holds NaN or infinite values; they are not scored"
        )
    values = label_values(m, track)
    lut = np.array([0, *(values[n] for n in m.outputs.names)], dtype=np.uint8)
    if m.outputs.kind == "threshold":
        labels = np.where(out[0, 0] >= m.outputs.threshold, lut[1], 0).astype(np.uint8)
    else:
        labels = lut[np.argmax(out[0], axis=0)]
    nib.save(nib.Nifti1Image(labels, affine), str(dest / f"{key}.nii.gz"))
