"""Model submissions: an ONNX file plus a manifest, run by ONNX Runtime in the worker.

Where a phase lists ``model`` in ``submission_kinds``, a team uploads an archive holding
``model.onnx`` and ``manifest.yaml`` instead of predictions. :func:`check_model_archive`
refuses at upload, with every problem listed: a manifest that does not validate (each
problem names its YAML line and field, :mod:`medarena.yamlerrors`), a model above the
phase's ``model_limits.max_model_mb``, a file ``onnx.checker`` rejects, a graph ONNX
Runtime's CPU provider cannot load (unsupported operators), and an input whose rank or
channel count disagrees with the manifest and the track.

The scoring job calls :func:`predict_cases`: every scored case (hidden ones included) is
read from the object store and preprocessed in the worker with the lab's blocks named in
the manifest (orientation, spacing, intensity normalisation; dose: structure masks
appended as channels); ONNX Runtime runs in a child process with the phase's limits
enforced while it runs (:mod:`medarena.challenges.model_sandbox`: address-space cap,
wall-clock timeout per case, one thread, no network, no credentials). The outputs become
exactly the files a predictions archive would hold (a CSV of values, scores or detection
candidates; label maps, dose grids or images on the case's grid), which the existing
scoring path then scores. A case over a limit, a non-finite output or an output of the
wrong shape fails the submission naming the case. The predictions of hidden cases live
only in the job's temporary folder and are never stored.

Track kinds: regression (one value per case, the track's ``value_column``),
classification and multilabel (one score per class or label, optionally through a
softmax or sigmoid), segmentation (sliding windows, argmax or threshold), dose (one
channel in Gy = scale * output + offset, clipped at 0), image-to-image (one channel,
scale * output + offset) and detection (a heatmap whose peaks become candidates).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from medarena.challenges.archives import ExtractedFile
from medarena.challenges.model_sandbox import ModelProcess, SandboxError
from medarena.challenges.spec import ModelLimits, Track
from medarena.errors import InputError, UserInputError
from medarena.imaging.nifti import read_nifti
from medarena.storage import LocalObjectStore
from medarena.yamlerrors import YamlProblem, field_name, parse_mapping, problem_at

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from medarena.db.platform_models import User

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.yaml"
MODEL_TASKS = (
    "regression",
    "classification",
    "multilabel",
    "segmentation",
    "dose",
    "image-to-image",
    "detection",
)
# tracks whose model sees the case's own grid through sliding windows
GRID_TASKS = ("segmentation", "dose", "image-to-image", "detection")
# the output kind each grid task needs
GRID_OUTPUTS = {
    "segmentation": ("argmax", "threshold"),
    "dose": ("image",),
    "image-to-image": ("image",),
    "detection": ("heatmap",),
}
# deterministic preprocessing blocks of the lab (medarena.lab.blocks) a manifest may name
NORMALISATION_BLOCKS = ("ct_window", "zscore", "scale_range")

logger = logging.getLogger(__name__)


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
    structures: list[str] = Field(
        default_factory=list,
        description="Dose: structure masks (the case's roi:<NAME> objects) appended as 0/1 "
        "channels after the image channels, in this order; an absent structure is all 0.",
    )
    possible_dose_mask: bool = Field(
        False, description="Dose: the possible-dose mask appended as the last channel."
    )


class Outputs(_Strict):
    kind: Literal["value", "scores", "argmax", "threshold", "image", "heatmap"] = Field(
        description="value: one number per output name (regression); scores: class or "
        "label scores, one per name (classification, multilabel); argmax: segmentation, "
        "channel 0 background and channel i the structure names[i-1]; threshold: "
        "segmentation, one channel, >= threshold is names[0]; image: one channel on the "
        "case's grid, written as scale * output + offset (dose in Gy, image-to-image); "
        "heatmap: detection, one channel, candidates at its peaks."
    )
    threshold: float = Field(
        0.5, description="threshold: the foreground cut; heatmap: the least peak probability."
    )
    names: list[str] = Field(
        default_factory=list,
        validate_default=True,
        description="The predictions CSV's columns or the structures (not for image, heatmap).",
    )
    activation: Literal["none", "softmax", "sigmoid"] = Field(
        "none", description="Applied to the model's output vector (or heatmap) first."
    )
    scale: float = Field(1.0, description="image: the written value is scale * output + offset.")
    offset: float = 0.0
    min_distance_mm: float = Field(
        5.0, ge=0, description="heatmap: a peak closer than this to a stronger one is dropped."
    )
    max_candidates: int = Field(100, ge=1, le=1000, description="heatmap: candidates per case.")

    @field_validator("names")
    @classmethod
    def _names_for_kind(cls, names: list[str], info: ValidationInfo) -> list[str]:
        kind = info.data.get("kind")
        if kind in ("image", "heatmap") and names:
            raise ValueError(f"kind {kind!r} writes one output; leave names out")
        if kind not in (None, "image", "heatmap") and not names:
            raise ValueError(f"kind {kind!r} needs at least one name")
        return names


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
    """An ONNX Runtime session for the upload's checks (operators, input shape), in the web
    process: graph optimisations off, so that no constant folding computes a tensor the
    model describes (a ConstantOfShape of 2^28 floats would otherwise take 1 GiB here); the
    worker's child, under the memory limit, runs it optimised."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
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
    if track.task in GRID_TASKS:
        return _grid_problems(m, track)
    kind, names = _expected_outputs(track)
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
    problems += _dose_input_problems(m, track)
    return problems + _block_problems(m)


def _block_problems(m: Manifest) -> list[str]:
    """The normalisation blocks' parameters, checked as the lab checks a recipe's (their
    ``channels`` against ``inputs.channels`` and each other, as ``task.in_channels``)."""
    from medarena.lab.blocks import channel_problems

    problems = []
    for i, ref in enumerate(m.inputs.normalisation):
        try:
            _params(ref.block, ref.params, f"inputs.normalisation[{i}].params")
        except UserInputError as exc:
            problems.append(str(exc))
    refs = [(r.block, r.params) for r in m.inputs.normalisation]
    for i, msg in channel_problems(refs, len(m.inputs.channels), "inputs.channels"):
        problems.append(f"{MANIFEST_FILE}: field inputs.normalisation[{i}].params.channels: {msg}")
    return problems


def label_values(m: Manifest, track: Track) -> dict[str, int]:
    """Output name -> label value written in the predicted map (the track's labels)."""
    labels = track.task_config.get("labels") or {}
    return {n: int(labels[n]) if n in labels else int(n) for n in m.outputs.names}


def in_channels(m: Manifest) -> int:
    """Channels the model's input has: images, then structures, then the dose mask."""
    return len(m.inputs.channels) + len(m.inputs.structures) + int(m.inputs.possible_dose_mask)


def _dose_input_problems(m: Manifest, track: Track) -> list[str]:
    problems = []
    if track.task != "dose":
        for field in ("structures", "possible_dose_mask"):
            if getattr(m.inputs, field):
                problems.append(
                    f"{MANIFEST_FILE}: field inputs.{field}: only for dose tracks "
                    f"(this is a {track.task} track)"
                )
        return problems
    rois = track.task_config.get("rois")
    if rois:
        bad = [n for n in m.inputs.structures if n not in rois]
        if bad:
            problems.append(
                f"{MANIFEST_FILE}: field inputs.structures: {bad} are not structures of this "
                f"track (task_config.rois: {', '.join(map(str, rois))})"
            )
    return problems


def _grid_problems(m: Manifest, track: Track) -> list[str]:
    problems = []
    kinds = GRID_OUTPUTS[track.task]
    if m.outputs.kind not in kinds:
        problems.append(
            f"{MANIFEST_FILE}: field outputs.kind: {m.outputs.kind!r}; this {track.task} track "
            f"needs {' or '.join(repr(k) for k in kinds)}"
        )
    if track.task == "segmentation":
        if m.outputs.kind == "threshold" and len(m.outputs.names) != 1:
            problems.append(f"{MANIFEST_FILE}: field outputs.names: threshold maps to one name")
        labels = track.task_config.get("labels") or {}
        bad = [n for n in m.outputs.names if n not in labels and not n.isdigit()]
        if bad:
            problems.append(
                f"{MANIFEST_FILE}: field outputs.names: {bad} are neither the track's "
                f"structures ({', '.join(labels) or 'none named'}) nor label values"
            )
    if m.outputs.kind == "heatmap" and m.outputs.activation == "softmax":
        problems.append(
            f"{MANIFEST_FILE}: field outputs.activation: a heatmap takes 'sigmoid' or 'none' "
            "(its values must be probabilities in [0, 1])"
        )
    if m.inputs.patch_size is None:
        problems.append(f"{MANIFEST_FILE}: field inputs.patch_size: a {track.task} model needs it")
    elif len(m.inputs.patch_size) != m.inputs.spatial_dims:
        problems.append(
            f"{MANIFEST_FILE}: field inputs.patch_size: {m.inputs.patch_size} has "
            f"{len(m.inputs.patch_size)} axes but inputs.spatial_dims is {m.inputs.spatial_dims}"
        )
    for field in ("orientation", "spacing", "size"):
        if getattr(m.inputs, field) is not None:
            problems.append(
                f"{MANIFEST_FILE}: field inputs.{field}: not supported for {track.task} yet "
                "(outputs must stay on the case's own grid)"
            )
    problems += _dose_input_problems(m, track)
    return problems + _block_problems(m)


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
    if isinstance(channels, int) and channels != in_channels(m):
        extra = ""
        if m.inputs.structures or m.inputs.possible_dose_mask:
            extra = " plus inputs.structures and inputs.possible_dose_mask"
        problems.append(
            f"{MODEL_FILE}: input {inputs[0].name!r} has {channels} channels but "
            f"manifest inputs.channels lists {len(m.inputs.channels)}{extra} "
            f"({in_channels(m)} in all)"
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

    try:  # the proto only: no external data file is opened
        proto = onnx.load(str(model.path), load_external_data=False)
    except Exception as exc:  # a file that is not an ONNX protobuf
        problems.append(f"{MODEL_FILE}: not an ONNX model: {_short(exc)}")
        return problems
    external = _external_tensors(proto.graph)
    if external:
        name, location = external[0]
        problems.append(
            f"{MODEL_FILE}: tensor {name!r} keeps its data in an external file "
            f"({location!r}); a model submission is one self-contained ONNX file (save it "
            "with onnx.save(model, path, save_as_external_data=False))"
        )
        return problems
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


def _external_tensors(graph: Any) -> list[tuple[str, str]]:
    """(name, location) of every tensor of ``graph`` and its subgraphs stored outside it.

    ONNX Runtime reads such data from a file beside the model; it refuses absolute paths and
    paths out of the model's folder, but a submission has no business naming files at all.
    """
    from onnx import AttributeProto, TensorProto

    found: list[tuple[str, str]] = []

    def tensor(t: Any) -> None:
        if t.data_location == TensorProto.EXTERNAL:
            where = {e.key: e.value for e in t.external_data}.get("location", "")
            found.append((t.name, where))

    def walk(g: Any) -> None:
        for t in g.initializer:
            tensor(t)
        for sp in g.sparse_initializer:
            tensor(sp.values)
            tensor(sp.indices)
        for node in g.node:
            for a in node.attribute:
                if a.type == AttributeProto.TENSOR:
                    tensor(a.t)
                elif a.type == AttributeProto.TENSORS:
                    for t in a.tensors:
                        tensor(t)
                elif a.type == AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        walk(sub)

    walk(graph)
    return found


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


def _params(block: str, values: dict[str, Any], where: str = "") -> Any:
    from medarena.lab.blocks import REGISTRY

    try:
        return REGISTRY[block].params.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_name(tuple(first["loc"]))
        at = f"field {where}.{field}" if where else f"parameter {field}"
        value = "" if first["type"] == "missing" else f"{first.get('input')!r}: "
        raise UserInputError(
            f"{MANIFEST_FILE}: {at} of block {block!r}: {value}{first['msg']}"
        ) from None


@dataclass
class _CaseInput:
    """One case's model input (channel-first, before preprocessing) and its grid."""

    image: np.ndarray  # the case's image channels
    masks: np.ndarray | None  # dose: structure (and possible-dose) masks, 0/1 channels
    affine: np.ndarray  # NIfTI (RAS) voxel -> world of the image grid


def _case_input(store: LocalObjectStore, case: Any, m: Manifest) -> _CaseInput:
    from medarena.lab.explain import case_image

    ndim = m.inputs.spatial_dims
    image, affine = case_image(store, case, ndim)
    masks = None
    roles = [f"roi:{n}" for n in m.inputs.structures]
    if m.inputs.possible_dose_mask:
        roles.append("possible_dose_mask")
    if roles:
        by_role = {o.role: o for o in case.objects}
        layers = []
        for role in roles:
            if role not in by_role:  # an absent structure: OpenKBP gives no mask either
                layers.append(np.zeros(image.shape[1:], np.float32))
                continue
            arr = read_nifti(store.path_of(by_role[role].digest)).array
            if arr.shape != image.shape[1:]:
                raise RuntimeError(f"case {case.case_key!r}: {role} is not on the image's grid")
            layers.append((arr > 0).astype(np.float32))
        masks = np.stack(layers)
    return _CaseInput(image, masks, affine)


def _limit_error(exc: SandboxError, key: str | None, limits: ModelLimits) -> UserInputError:
    """The participant's reason for a child that failed on case ``key`` (None: loading)."""
    where = f"on case {key}" if key is not None else "while ONNX Runtime loaded it"
    if exc.kind == "time":
        return UserInputError(
            f"model exceeded the time limit of {limits.time_per_case_s:g} s {where} "
            "(this phase's model_limits.time_per_case_s; the inference process was stopped)"
        )
    if exc.kind == "memory":
        return UserInputError(
            f"model exceeded the memory limit of {limits.memory_mb} MB {where} "
            f"(this phase's model_limits.memory_mb): {exc.message}"
        )
    if exc.kind == "crash":
        return UserInputError(
            f"{exc.message} {where}; a model over the memory limit of "
            f"{limits.memory_mb} MB (model_limits.memory_mb) ends this way"
        )
    if key is None:
        return UserInputError(f"ONNX Runtime cannot load {MODEL_FILE}: {exc.message}")
    return UserInputError(f"case {key}: ONNX Runtime failed: {exc.message}")


def _start(model: Path, limits: ModelLimits, workdir: Path) -> ModelProcess:
    try:
        proc = ModelProcess(model, limits.memory_mb, workdir, 60 + limits.time_per_case_s)
    except SandboxError as exc:
        raise _limit_error(exc, None, limits) from None
    logger.info("model process %d started (network: %s)", proc.proc.pid, proc.network)
    return proc


# What a refusal on a hidden case may say: the rule broken, never a number or a runtime
# message computed from the case (a model could write hidden data into them: the output
# values a "not finite" message quoted, a heatmap's range, a data-dependent output shape).
_HIDDEN = "{key} (hidden subset)"
_HIDDEN_REASONS = (
    ("time limit", None),  # names only the phase's limit and the case: kept as it is
    ("channel(s) but the manifest", None),  # the track's channel count, not the case's data
    (
        "ends this way",
        "the model's inference process ended abnormally on case " + _HIDDEN + "; a model "
        "over the memory limit of {mb} MB (model_limits.memory_mb) ends this way",
    ),
    (
        "memory limit",
        "model exceeded the memory limit of {mb} MB on case " + _HIDDEN + " (this phase's "
        "model_limits.memory_mb)",
    ),
    ("finite", "case " + _HIDDEN + ": the model's output holds NaN or infinite values"),
    ("NaN", "case " + _HIDDEN + ": the model's output holds NaN or infinite values"),
    (
        "heatmap has values",
        "case " + _HIDDEN + ": the heatmap's values are outside [0, 1] (outputs.activation)",
    ),
    (
        "shape",
        "case " + _HIDDEN + ": the model's output shape does not fit the manifest's outputs "
        "and the track",
    ),
    ("ONNX Runtime failed", "case " + _HIDDEN + ": ONNX Runtime failed while running the model"),
)


def _hidden_case_error(exc: UserInputError, key: str, limits: ModelLimits) -> UserInputError:
    """The reason for a failure on a case of a hidden subset: the rule, not the details."""
    text = str(exc)
    what = "case " + _HIDDEN + ": the model's output was refused"
    for needle, reason in _HIDDEN_REASONS:
        if needle in text:
            if reason is None:
                return exc
            what = reason
            break
    return UserInputError(
        what.format(key=key, mb=limits.memory_mb) + ". Values, shapes and runtime messages "
        "computed from a hidden case are not shown (a model could send hidden data back "
        "through them); run the model on public cases to see them"
    )


def predict_cases(
    files_dir: Path,
    store: LocalObjectStore,
    cases: list[Any],
    track: Track,
    limits: ModelLimits,
    dest: Path,
    progress: Any = None,
    *,
    hidden: bool = False,
) -> Path:
    """Run the model of ``files_dir`` on ``cases``; the predictions it wrote in ``dest``.

    The worker reads and preprocesses each case; ONNX Runtime runs in a child process with
    the phase's limits (:mod:`medarena.challenges.model_sandbox`). Raises UserInputError
    (the submission fails with that reason, no retry) for a model over a limit, a
    non-finite or misshapen output, or a case whose channels disagree with the manifest.
    With ``hidden`` (the cases are a hidden subset) a case's reason names the rule only,
    without the values, shapes or runtime messages computed from the case.
    """
    try:
        return _predict_cases(files_dir, store, cases, track, limits, dest, progress)
    except _CaseFailure as failure:
        if hidden:
            raise _hidden_case_error(failure.error, failure.key, limits) from None
        raise failure.error from None


class _CaseFailure(Exception):
    """A refusal raised while case ``key`` ran (kept apart from the archive's own checks)."""

    def __init__(self, key: str, error: UserInputError) -> None:
        self.key = key
        self.error = error
        super().__init__(str(error))


def _predict_cases(
    files_dir: Path,
    store: LocalObjectStore,
    cases: list[Any],
    track: Track,
    limits: ModelLimits,
    dest: Path,
    progress: Any = None,
) -> Path:
    model_path = model_file(files_dir)
    manifest_path = next((p for p in files_dir.iterdir() if p.name.lower() == MANIFEST_FILE), None)
    if model_path is None or manifest_path is None:
        raise UserInputError(f"a model archive needs {MODEL_FILE} and {MANIFEST_FILE}")
    try:
        manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"))
    except ManifestError as exc:
        raise UserInputError(str(exc)) from None
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(track, manifest, dest)
    proc = _start(model_path, limits, dest.parent)  # its log stays out of the predictions
    try:
        for i, case in enumerate(cases):
            try:
                _predict_case(proc, store, case, manifest, track, limits, writer)
            except UserInputError as exc:
                raise _CaseFailure(case.case_key, exc) from None
            if progress is not None:
                progress(i + 1, len(cases))
    finally:
        proc.close()
    return writer.finish()


def _predict_case(
    proc: ModelProcess,
    store: LocalObjectStore,
    case: Any,
    manifest: Manifest,
    track: Track,
    limits: ModelLimits,
    writer: _Writer,
) -> None:
    """Run the model on one case and hand its output to ``writer``."""
    data = _case_input(store, case, manifest)
    if data.image.shape[0] != len(manifest.inputs.channels):
        raise UserInputError(
            f"case {case.case_key}: the track's images have {data.image.shape[0]} "
            f"channel(s) but the manifest lists {len(manifest.inputs.channels)}"
        )
    x = _preprocess(data.image, data.affine, manifest)
    if data.masks is not None:
        x = np.concatenate([x, data.masks], axis=0)
    # the model's time: every window of the case, not the worker's reading and
    # preprocessing (whose first case also imports MONAI)
    deadline = time.monotonic() + limits.time_per_case_s
    try:
        if track.task in GRID_TASKS:
            out = _sliding_window(proc, x[None], manifest, deadline)
        else:
            out = proc.run(x[None], deadline)
    except SandboxError as exc:
        raise _limit_error(exc, case.case_key, limits) from None
    if time.monotonic() > deadline:  # the windows' blending after the last answer
        raise _limit_error(SandboxError("time", ""), case.case_key, limits)
    writer.write(case.case_key, out, data)


class _Writer:
    """Writes each case's output as a predictions archive of the track's kind would hold."""

    def __init__(self, track: Track, m: Manifest, dest: Path) -> None:
        self.track, self.m, self.dest = track, m, dest
        self.rows: list[list[str]] = []

    def write(self, key: str, out: np.ndarray, data: _CaseInput) -> None:
        task = self.track.task
        if task == "segmentation":
            _write_label_map(
                out, data.image.shape[1:], data.affine, key, self.m, self.track, self.dest
            )
        elif task in ("dose", "image-to-image"):
            self._write_image(key, out, data)
        elif task == "detection":
            self._write_candidates(key, out, data)
        else:
            self._write_values(key, out)

    def _grid_output(self, key: str, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if out.ndim != len(shape) + 2 or out.shape[1] != 1 or tuple(out.shape[2:]) != shape:
            raise UserInputError(
                f"case {key}: output shape {list(out.shape)}; expected [1, 1, "
                f"{', '.join(map(str, shape))}] (outputs.kind {self.m.outputs.kind!r}: one "
                "channel on the case's grid)"
            )
        if not np.all(np.isfinite(out)):
            raise UserInputError(
                f"case {key}: the model's output holds NaN or infinite values; they are not scored"
            )
        return np.asarray(out[0, 0], dtype=np.float64)

    def _write_image(self, key: str, out: np.ndarray, data: _CaseInput) -> None:
        import nibabel as nib

        values = self._grid_output(key, out, data.image.shape[1:])
        values = values * self.m.outputs.scale + self.m.outputs.offset
        if self.track.task == "dose":
            values = np.maximum(values, 0.0)  # a dose is never negative (Gy)
        img = nib.Nifti1Image(values.astype(np.float32), data.affine)
        nib.save(img, str(self.dest / f"{key}.nii.gz"))

    def _write_candidates(self, key: str, out: np.ndarray, data: _CaseInput) -> None:
        from medarena.lab.detection import heatmap_candidates

        h = self._grid_output(key, out, data.image.shape[1:])
        if self.m.outputs.activation == "sigmoid":
            h = 1.0 / (1.0 + np.exp(-h))
        elif h.min() < 0 or h.max() > 1:
            raise UserInputError(
                f"case {key}: the heatmap has values in [{h.min():g}, {h.max():g}]; with "
                "outputs.activation 'none' they must be probabilities in [0, 1] "
                "(or set activation: sigmoid)"
            )
        o = self.m.outputs
        for c in heatmap_candidates(
            h,
            data.affine,
            threshold=o.threshold,
            min_distance_mm=o.min_distance_mm,
            max_candidates=o.max_candidates,
        ):
            self.rows.append([key, *(repr(c[k]) for k in ("x", "y", "z", "probability"))])

    def _write_values(self, key: str, out: np.ndarray) -> None:
        columns = self.m.outputs.names
        if out.size != len(columns):
            raise UserInputError(
                f"case {key}: output shape {list(out.shape)}; the manifest's "
                f"outputs.names need {len(columns)} value(s) per case (shape [1, {len(columns)}])"
            )
        raw = out.reshape(-1)
        if not np.all(np.isfinite(raw)):
            raise UserInputError(
                f"case {key}: the model's output is not finite "
                f"({', '.join(str(float(v)) for v in raw[:5])}); "
                "NaN and infinite outputs are not scored"
            )
        values = _activate(raw, self.m.outputs.activation)
        self.rows.append([key, *(repr(float(v)) for v in values)])

    def finish(self) -> Path:
        """The path the scoring reads: the folder of images, or the predictions CSV."""
        if self.track.task in ("segmentation", "dose", "image-to-image"):
            return self.dest
        header = ["x", "y", "z", "probability"] if self.track.task == "detection" else None
        path = self.dest / "predictions.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["case_id", *(header or self.m.outputs.names)])
            w.writerows(self.rows)
        return path


def _sliding_window(proc: ModelProcess, x: np.ndarray, m: Manifest, deadline: float) -> np.ndarray:
    """MONAI's sliding-window inference with the child's ONNX Runtime as the predictor."""
    import torch
    from monai.inferers import sliding_window_inference

    assert m.inputs.patch_size is not None

    def predict(patch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(proc.run(patch.numpy(), deadline))

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


# ---------------------------------------------------------------------------- withheld images


def images_withheld(
    session: Session, user: User | None, dataset: str, case_splits: Mapping[str, str]
) -> bool:
    """Whether ``user`` may not see the images of a case of ``dataset``.

    ``case_splits`` maps each split of the case to its subset. A case's images are withheld
    when it lies in a hidden subset that a phase taking model submissions only scores: the
    worker runs the teams' models on it and the teams see scores, never the images. Admins
    and the challenge's organizers and reviewers still see them. Reads the stored specs as
    data (every field is stored), without validating each one again.
    """
    from sqlalchemy import select

    from medarena.accounts.roles import can_review
    from medarena.db.models import Dataset, Split
    from medarena.db.platform_models import Challenge

    if user is not None and user.is_admin:
        return False
    hidden = {
        name: set(subsets or ())
        for name, subsets in session.execute(
            select(Split.name, Split.hidden_subsets).join(Dataset).where(Dataset.name == dataset)
        ).all()
    }
    if not any(sub in hidden.get(split, ()) for split, sub in case_splits.items()):
        return False  # not hidden anywhere: nothing to withhold
    for ch_id, spec in session.execute(select(Challenge.id, Challenge.spec)).all():
        tracks = {t.get("slug"): t for t in (spec or {}).get("tracks", [])}
        for phase in (spec or {}).get("phases", []):
            if "predictions" in (phase.get("submission_kinds") or ["predictions"]):
                continue
            names = phase.get("tracks")
            for slug, t in tracks.items():
                if names is not None and slug not in names:
                    continue
                if t.get("dataset") != dataset:
                    continue
                split = t.get("split")
                subset = phase.get("scored_subset") or t.get("reference_subset")
                if (
                    case_splits.get(split) == subset
                    and subset in hidden.get(split, ())
                    and not can_review(session, user, ch_id)
                ):
                    return True
    return False
