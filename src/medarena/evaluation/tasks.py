"""Task adapters: per-task configuration models and the functions that score one task's inputs.

Two kinds of task:

- image tasks (segmentation, brats, autopet, image-to-image, dose): one file (or folder) per
  case; :func:`score_image_case` reads and scores one case and is a top-level, picklable
  function so a process pool (or a Dask cluster) can run it next to the data.
- table tasks (classification, multilabel, regression, detection): one CSV per side with a
  ``case_id`` column; the whole table is scored at once because their headline metrics (AUC,
  CPM, Pearson r) are dataset-level.

Input formats are documented in docs/evaluation.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medarena.errors import InputError
from medarena.evaluation import dose as dose_mod
from medarena.evaluation import image as image_mod
from medarena.evaluation.policy import OVERLAP_METRICS, EmptyPolicy
from medarena.evaluation.segmentation import (
    HD95Variant,
    NSDVariant,
    per_region,
    union_box,
)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class TaskConfig(BaseModel):
    """Settings shared by every task."""

    model_config = ConfigDict(extra="forbid")

    worst_values: dict[str, float] = Field(
        default_factory=dict,
        description="Worst value per metric for missing/failed cases, overriding the registry.",
    )


class ClassificationConfig(TaskConfig):
    """Binary or multi-class classification from a CSV of class scores."""

    mode: Literal["binary", "multiclass"] = "binary"
    class_names: list[str] | None = Field(
        None, description="Class order; default: the prediction's score columns in file order."
    )
    label_column: str = "label"
    threshold: float = 0.5
    min_specificity: float | None = None
    single_class: Literal["skip", "nan", "error"] = "skip"


class MultilabelConfig(TaskConfig):
    """Multi-label classification: one 0/1 reference column and one score column per label."""

    labels: list[str] | None = Field(None, description="Label columns; default: all but case_id.")
    threshold: float = 0.5
    single_class: Literal["skip", "nan", "error"] = "skip"


class RegressionConfig(TaskConfig):
    """Scalar regression (brain age, bone age) from CSVs with a value column."""

    value_column: str = "value"


class DetectionConfig(TaskConfig):
    """LUNA16-style point detection: candidates vs reference spheres."""

    threshold: float | None = Field(
        None, description="Probability cut for the per-case counts (default: every candidate)."
    )
    bootstrap: int = Field(1000, ge=0, description="Scan resamples for the CPM interval.")
    seed: int = 0


class ImageConfig(TaskConfig):
    """Image-to-image (denoising, reconstruction): PSNR, SSIM, NMSE, MAE, RMSE."""

    data_range: float | Literal["ref_max", "ref_range"] = "ref_max"
    slice_axis: int = -1


class DoseConfig(TaskConfig):
    """OpenKBP dose prediction."""

    targets: list[str] = Field(default_factory=lambda: sorted(dose_mod.OPENKBP_TARGETS))
    rois: list[str] = Field(
        default_factory=lambda: [*dose_mod.OPENKBP_OARS, *sorted(dose_mod.OPENKBP_TARGETS)]
    )
    score_outside_mask: bool = False


# ------------------------------------------------------------------------------ image I/O


def case_id_of(path: Path) -> str | None:
    """Case id of a NIfTI file name (name without .nii / .nii.gz), None for other files."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def load_nifti(path: Path) -> tuple[NDArray[Any], tuple[float, ...]]:
    """Voxel array and spacing (mm) of a NIfTI file; InputError names the file and the rule.

    Reads through :func:`medarena.imaging.read_nifti` as stored: the dtype is kept (label
    maps stay integer, nothing is converted to float or copied), the array is in NIfTI voxel
    order and the spacing in array-axis order. Float files must be finite.
    """
    from medarena.imaging import read_nifti

    try:
        # "intensity" keeps the stored dtype; label checks are the task's (they name values)
        img = read_nifti(path, kind="intensity")
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(exc.rule, path=path, value=exc.value, hint=exc.hint) from None
    except Exception as exc:  # nibabel raises many types for a corrupt file
        raise InputError(
            f"unreadable NIfTI file ({type(exc).__name__}: {exc})", path=path
        ) from None
    arr = img.array
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise InputError("image contains NaN or infinite values", path=path)
    return arr, img.spacing


def check_same_grid(
    pred: NDArray[Any],
    pred_spacing: tuple[float, ...],
    ref: NDArray[Any],
    ref_spacing: tuple[float, ...],
    pred_path: Path,
) -> None:
    """Prediction and reference must share shape and spacing (0.1 % tolerance)."""
    if pred.shape != ref.shape:
        raise InputError(
            f"shape {pred.shape} differs from the reference shape {ref.shape}",
            path=pred_path,
            hint="predictions must be on the reference image grid",
        )
    if len(pred_spacing) != len(ref_spacing) or not np.allclose(
        pred_spacing, ref_spacing, rtol=1e-3, atol=1e-5
    ):
        raise InputError(
            f"spacing mismatch: voxel spacing {pred_spacing} mm differs from the reference "
            f"spacing {ref_spacing} mm (tolerance 0.1 %)",
            path=pred_path,
        )


def _image_case(ref: Path, pred: Path, config: ImageConfig) -> dict[str, float]:
    r, rs = load_nifti(ref)
    p, ps = load_nifti(pred)
    check_same_grid(p, ps, r, rs, pred)
    return image_mod.image_metrics(p, r, data_range=config.data_range, slice_axis=config.slice_axis)


def _dose_case(ref: Path, pred: Path, config: DoseConfig) -> dict[str, float]:
    """Reference: folder ``<case>/`` with dose, possible_dose_mask and <ROI> NIfTI files."""
    ref_dose, rs = load_nifti(_one_nifti(ref, "dose"))
    mask, _ = load_nifti(_one_nifti(ref, "possible_dose_mask"))
    p, ps = load_nifti(pred)
    check_same_grid(p, ps, ref_dose, rs, pred)
    rois: dict[str, NDArray[Any]] = {}
    for roi in config.rois:
        f = _find_nifti(ref, roi)
        if f is not None:
            arr, _ = load_nifti(f)
            if arr.shape != ref_dose.shape:
                raise InputError("ROI mask shape differs from the dose grid", path=f)
            rois[roi] = arr
    voxel_mm3 = float(np.prod(rs))
    return dose_mod.dose_case(
        p,
        ref_dose,
        possible_dose_mask=mask,
        rois=rois,
        targets=config.targets,
        voxel_volume_mm3=voxel_mm3,
        score_outside_mask=config.score_outside_mask,
    )


def _find_nifti(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        f = folder / f"{stem}{suffix}"
        if f.is_file():
            return f
    return None


def _one_nifti(folder: Path, stem: str) -> Path:
    f = _find_nifti(folder, stem)
    if f is None:
        raise InputError(f"reference case folder has no {stem}.nii.gz", path=folder)
    return f


# ------------------------------------------------------------------------------ label-map tasks


SegmentationMetric = Literal["dice", "iou", "hd", "hd95", "assd", "masd", "nsd"]
_DEFAULT_SEG_METRICS: tuple[SegmentationMetric, ...] = (
    "dice",
    "iou",
    "hd",
    "hd95",
    "assd",
    "masd",
    "nsd",
)


class SegmentationConfig(TaskConfig):
    """Segmentation of label maps: overlap and surface metrics per label or region."""

    labels: dict[str, int] | None = Field(
        None, description="Structure name -> its label value, e.g. {liver: 1, tumour: 2}."
    )
    regions: dict[str, list[int]] | None = Field(
        None, description="Region name -> label values whose union it is, e.g. {WT: [1, 2, 3]}."
    )
    metrics: list[SegmentationMetric] = Field(
        default_factory=lambda: list(_DEFAULT_SEG_METRICS),
        min_length=1,
    )
    nsd_tolerance_mm: float = Field(1.0, ge=0, allow_inf_nan=False)
    hd95_variant: HD95Variant = "max_directed"
    nsd_variant: NSDVariant = "border"
    empty: EmptyPolicy = Field(default_factory=EmptyPolicy)
    allowed_labels: list[int] | None = Field(
        None,
        description="Label values a file may hold; default 0 plus every value of labels/regions "
        "(binary masks without labels/regions: 0 and 1).",
    )

    @model_validator(mode="after")
    def _one_kind_of_structure(self) -> SegmentationConfig:
        if self.labels is not None and self.regions is not None:
            raise ValueError("give either 'labels' or 'regions', not both")
        if (
            self.labels == {}
            or self.regions == {}
            or any(not v for v in (self.regions or {}).values())
        ):
            raise ValueError("'labels'/'regions' must name at least one non-empty structure")
        for values in (self.structures() or {}).values():
            if 0 in values:
                raise ValueError("label 0 is background and cannot be part of a structure")
        return self

    def structures(self) -> dict[str, tuple[int, ...]] | None:
        """Name -> label values per scored structure; None for a binary mask (plain keys)."""
        if self.labels is not None:
            return {k: (v,) for k, v in self.labels.items()}
        if self.regions is not None:
            return {k: tuple(v) for k, v in self.regions.items()}
        return None

    def allowed(self) -> frozenset[int]:
        """Label values a reference or prediction file may hold."""
        if self.allowed_labels is not None:
            return frozenset({0, *self.allowed_labels})
        structs = self.structures()
        if structs is None:
            return frozenset({0, 1})
        return frozenset({0, *(v for vals in structs.values() for v in vals)})


class BratsConfig(TaskConfig):
    """BraTS: WT/TC/ET Dice and HD95, optionally the BraTS 2023 lesion-wise scores."""

    labels: Literal["2023", "2021"] = Field(
        "2023", description="Label convention: 2023 (1 NETC, 2 SNFH, 3 ET) or 2021 (1, 2, 4)."
    )
    subchallenge: Literal["GLI", "SSA", "PED", "MEN", "MET"] = "GLI"
    lesion_wise: bool = True
    hd95_variant: HD95Variant = "surface_area"


class AutopetConfig(TaskConfig):
    """autoPET: whole-volume Dice, false-positive and false-negative volume (ml)."""

    negative: Literal["fpv_only", "all"] = Field(
        "fpv_only",
        description="Negative reference (no lesion): report only fpv_ml (challenge rule), or "
        "also Dice by the empty-mask policy and fnv_ml 0.",
    )


def _read_label_pair(
    ref: Path, pred: Path, *, allowed: frozenset[int], margin: int = 0, min_ndim: int = 2
) -> tuple[NDArray[Any], NDArray[Any], tuple[float, ...], tuple[int, ...]]:
    """Read, validate and crop a (reference, prediction) pair of label maps.

    Checks in order, each failing with the file and the rule: readable, finite (float
    files), same shape, same spacing, integer values from ``allowed``. Returns both maps
    cropped to the box of their joint foreground grown by ``margin`` (None box: 1-voxel
    crops), the spacing and the full shape. A (i, j, 1) volume is read as a 2D image.
    """
    r, rs = load_nifti(ref)
    p, ps = load_nifti(pred)
    check_same_grid(p, ps, r, rs, pred)
    if r.ndim == 3 and r.shape[2] == 1 and min_ndim == 2:
        # a single slice is a 2D image: as a volume, every pixel would be on the surface
        r, p, rs = r[:, :, 0], p[:, :, 0], rs[:2]
    if r.ndim not in (min_ndim, 3):
        raise InputError(
            f"label map must be {'2D or ' if min_ndim == 2 else ''}3D, got shape {r.shape}",
            path=ref,
        )
    full_shape = tuple(int(n) for n in r.shape)
    # the joint box bounds every non-zero voxel, so checking labels inside it is exact
    box = union_box(r, p, margin)
    if box is None:
        box = tuple(slice(0, 1) for _ in r.shape)
    rc, pc = r[box], p[box]
    for arr, path in ((rc, ref), (pc, pred)):
        _check_label_values(arr, allowed, path)
    return rc, pc, rs, full_shape


def present_values(arr: NDArray[Any]) -> NDArray[Any]:
    """The distinct values of ``arr``, sorted (``np.unique``); integer maps by counting.

    Label maps hold few distinct values in a narrow range, so a histogram over
    ``[min, max]`` finds them several times faster than ``np.unique``'s sort.
    """
    if arr.dtype.kind not in "bui" or arr.size == 0:
        return np.unique(arr)
    if arr.dtype.kind == "b":
        return np.unique(arr)
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo > 1 << 16:
        return np.unique(arr)
    if hi - lo < 16:  # a few labels: one comparison pass per candidate value
        found = [v for v in range(lo + 1, hi) if np.any(arr == v)]
        return np.array([lo, *found, hi][: 1 if lo == hi else None], arr.dtype)
    shifted = arr.reshape(-1).astype(np.intp) - lo  # in intp: no wrap-around of narrow types
    counts = np.bincount(shifted, minlength=hi - lo + 1)
    return (np.flatnonzero(counts) + lo).astype(arr.dtype)


def _check_label_values(arr: NDArray[Any], allowed: frozenset[int], path: Path) -> None:
    values = present_values(arr)
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        odd = [float(v) for v in values[values != np.round(values)][:5]]
        raise InputError("label map holds non-integer values", path=path, value=odd)
    bad = sorted(int(v) for v in values if int(v) not in allowed)
    if bad:
        raise InputError(
            f"unexpected label values {bad}; this task allows only {sorted(allowed)}",
            path=path,
            value=bad,
        )


def _segmentation_case(ref: Path, pred: Path, config: SegmentationConfig) -> dict[str, float]:
    r, p, spacing, full_shape = _read_label_pair(ref, pred, allowed=config.allowed())
    structs = config.structures()
    # a binary mask's foreground is every allowed non-zero value
    regions = structs if structs is not None else {"": tuple(sorted(config.allowed() - {0}))}
    out = per_region(
        p,
        r,
        spacing,
        regions,
        metrics=tuple(config.metrics),
        nsd_tolerance_mm=config.nsd_tolerance_mm,
        hd95_variant=config.hd95_variant,
        nsd_variant=config.nsd_variant,
        empty=config.empty,
        image_shape=full_shape,
    )
    if structs is None:  # binary mask: plain metric names
        return {k.split("/", 1)[1]: v for k, v in out.items()}
    return out


def _brats_case(ref: Path, pred: Path, config: BratsConfig) -> dict[str, float]:
    from medarena.evaluation.brats import BRATS_REGIONS, LESION_PARAMS, brats_case

    allowed = frozenset({0, *BRATS_REGIONS[config.labels]["WT"]})
    # margin = the lesion-wise dilation, the crop brats_case would make itself
    margin = LESION_PARAMS[config.subchallenge][0]
    r, p, spacing, _ = _read_label_pair(ref, pred, allowed=allowed, margin=margin, min_ndim=3)
    return brats_case(
        p,
        r,
        spacing,
        labels=config.labels,
        subchallenge=config.subchallenge,
        lesion_wise=config.lesion_wise,
        hd95_variant=config.hd95_variant,
    )


def _autopet_case(ref: Path, pred: Path, config: AutopetConfig) -> dict[str, float]:
    from medarena.evaluation.autopet import autopet_case

    r, p, spacing, _ = _read_label_pair(ref, pred, allowed=frozenset({0, 1}), min_ndim=3)
    return autopet_case(p, r, spacing, negative=config.negative)


# Per-case worst values of the label-map tasks (metric -> value; None: no fixed worst, the
# runner takes the submission's worst scored case). They follow each task's own conventions
# (the empty policy's distance, BraTS's 374 mm) rather than the registry's generic values.
CaseWorst = Callable[[Path, Any], dict[str, float | None]]


def _header_grid(ref: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and spacing of a reference from its header, as :func:`load_nifti` reads them."""
    import nibabel as nib

    img = nib.load(str(ref))  # the header only: voxels are read lazily, and not here
    shape = tuple(int(n) for n in img.shape)  # type: ignore[attr-defined]
    # spacing from the affine's column lengths, as medarena.imaging derives it
    spacing = tuple(float(x) for x in np.linalg.norm(img.affine[:3, :3], axis=0))  # type: ignore[attr-defined]
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        return shape[:2], spacing[:2]
    return shape[:3], spacing[: len(shape[:3])]


def _segmentation_worst(ref: Path, config: SegmentationConfig) -> dict[str, float | None]:
    shape, spacing = _header_grid(ref)
    worst: dict[str, float] = {}
    for m in config.metrics:
        vals = [config.empty.value(m, c, shape, spacing) for c in ("ref_empty", "pred_empty")]
        worst[m] = min(vals) if m in OVERLAP_METRICS else max(vals)
    structs = config.structures()
    if structs is None:
        return dict(worst)
    return {f"{s}/{m}": v for s in structs for m, v in worst.items()}


def _brats_worst(ref: Path, config: BratsConfig) -> dict[str, float | None]:
    from medarena.evaluation.brats import BRATS_PENALTY_MM

    per: dict[str, float | None] = {"dice": 0.0, "hd95": BRATS_PENALTY_MM}
    if config.lesion_wise:
        per.update(
            lesion_dice=0.0,
            lesion_hd95=BRATS_PENALTY_MM,
            lesion_tp=0.0,
            lesion_fn=None,
            lesion_fp=None,
        )
    return {f"{region}/{m}": v for region in ("WT", "TC", "ET") for m, v in per.items()}


def _autopet_worst(ref: Path, config: AutopetConfig) -> dict[str, float | None]:
    r, _ = load_nifti(ref)
    if np.any(r):
        return {"dice": 0.0, "fpv_ml": None, "fnv_ml": None, "negative": 0.0}
    out: dict[str, float | None] = {"fpv_ml": None, "negative": 1.0}
    if config.negative == "all":
        out.update(dice=0.0, fnv_ml=0.0)
    return out


ImageScorer = Callable[[Path, Path, Any], dict[str, float]]

# task name -> (config model, per-case scorer)
IMAGE_TASKS: dict[str, tuple[type[TaskConfig], ImageScorer]] = {
    "segmentation": (SegmentationConfig, _segmentation_case),
    "brats": (BratsConfig, _brats_case),
    "autopet": (AutopetConfig, _autopet_case),
    "image-to-image": (ImageConfig, _image_case),
    "dose": (DoseConfig, _dose_case),
}
CASE_WORST: dict[str, CaseWorst] = {
    "segmentation": _segmentation_worst,
    "brats": _brats_worst,
    "autopet": _autopet_worst,
}


def case_worst_values(
    task: str, ref: str | Path, config: TaskConfig
) -> dict[str, float | None] | None:
    """Worst value per metric of one missing/failed case of ``task`` (None: no task rule).

    A value of None means the metric has no fixed worst; the runner then applies the
    submission's-worst-case rule. A reference that cannot be read gives None too (the
    registry's values apply).
    """
    fn = CASE_WORST.get(task)
    if fn is None:
        return None
    try:
        return fn(Path(ref), config)
    except (InputError, OSError, ValueError):
        return None


def score_image_case(
    task: str, case_id: str, ref: str, pred: str, config: Mapping[str, Any]
) -> tuple[str, dict[str, float] | None, str | None]:
    """Read and score one case; returns (case id, metrics or None, failure reason or None).

    Top-level and given only strings and plain dicts, so it pickles for a process pool or a
    Dask worker. Bad input (unreadable file, wrong grid, NaN, unexpected label) becomes a
    failure reason naming the file and the rule; other exceptions propagate.
    """
    model, scorer = IMAGE_TASKS[task]
    cfg = model.model_validate(dict(config))
    try:
        return case_id, scorer(Path(ref), Path(pred), cfg), None
    except InputError as exc:
        return case_id, None, str(exc)


# ------------------------------------------------------------------------------ CSV tables


def read_csv_table(path: Path) -> tuple[list[str], dict[str, list[dict[str, str]]]]:
    """Columns and rows grouped by case id of a CSV with a ``case_id`` column."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            if "case_id" not in cols:
                raise InputError("CSV needs a 'case_id' column", path=path, value=cols)
            rows: dict[str, list[dict[str, str]]] = {}
            for i, row in enumerate(reader, start=2):
                cid = (row.get("case_id") or "").strip()
                if not cid:
                    raise InputError(f"line {i}: empty case_id", path=path)
                rows.setdefault(cid, []).append({k: (v or "").strip() for k, v in row.items()})
    except OSError as exc:
        raise InputError(f"cannot read CSV ({exc.strerror})", path=path) from None
    except UnicodeDecodeError:
        raise InputError("CSV is not UTF-8 text", path=path) from None
    return cols, rows


def parse_number(text: str, *, path: Path, case_id: str, column: str) -> float:
    """A finite float from a CSV cell, or InputError naming file, case, column and value."""
    try:
        v = float(text)
    except ValueError:
        raise InputError(
            f"case {case_id}: column {column!r} must be a number", path=path, value=text
        ) from None
    if not math.isfinite(v):
        raise InputError(
            f"case {case_id}: column {column!r} must be finite (no NaN/inf)", path=path, value=text
        )
    return v


def single_row(rows: list[dict[str, str]], *, path: Path, case_id: str) -> dict[str, str]:
    """The one row of a case in a one-row-per-case CSV."""
    if len(rows) != 1:
        raise InputError(f"case {case_id} has {len(rows)} rows, expected one", path=path)
    return rows[0]


class TableOutcome(BaseModel):
    """What a table task produced before the runner adds aggregates."""

    cases: dict[str, dict[str, float]] = Field(default_factory=dict)
    dataset_metrics: dict[str, float] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def _split(
    ref_rows: Mapping[str, list[dict[str, str]]],
    pred_rows: Mapping[str, list[dict[str, str]]],
    parse: Callable[[str, list[dict[str, str]]], Any],
    outcome: TableOutcome,
) -> dict[str, Any]:
    """Parse each reference case's prediction; record missing and failed cases."""
    parsed: dict[str, Any] = {}
    for cid in sorted(ref_rows):
        if cid not in pred_rows:
            outcome.missing.append(cid)
            continue
        try:
            parsed[cid] = parse(cid, pred_rows[cid])
        except InputError as exc:
            outcome.failed[cid] = str(exc)
    extra = set(pred_rows) - set(ref_rows)
    if extra:
        outcome.notes.append(f"{len(extra)} prediction case(s) not in the reference were ignored")
    return parsed


def _class_scores(
    cols: list[str], config: ClassificationConfig, pred_path: Path
) -> tuple[list[str], list[str]]:
    """(class names, prediction score columns) of a classification task."""
    score_cols = [c for c in cols if c != "case_id"]
    if config.mode == "binary":
        if "score" in score_cols:
            return (config.class_names or ["0", "1"]), ["score"]
        if config.class_names and len(config.class_names) == 2 and config.class_names[1] in cols:
            return config.class_names, [config.class_names[1]]
        if len(score_cols) == 1:
            return (config.class_names or ["0", "1"]), score_cols
        raise InputError(
            "binary prediction CSV needs a 'score' column (score of the positive class)",
            path=pred_path,
            value=score_cols,
        )
    names = config.class_names or score_cols
    absent = [c for c in names if c not in cols]
    if absent or len(names) < 2:
        raise InputError(
            "multi-class prediction CSV needs one score column per class",
            path=pred_path,
            value=absent or names,
        )
    return names, names


def evaluate_classification(
    ref_path: Path, pred_path: Path, config: ClassificationConfig
) -> TableOutcome:
    """Binary / multi-class classification: per-case ``correct`` and dataset-level metrics.

    A missing or failed case gets the worst prediction: all score on a wrong class (binary:
    score 1 - label; multi-class: class (label + 1) mod K).
    """
    from medarena.evaluation.classification import classification_metrics

    ref_cols, ref_rows = read_csv_table(ref_path)
    pred_cols, pred_rows = read_csv_table(pred_path)
    if config.label_column not in ref_cols:
        raise InputError(
            f"reference CSV needs a {config.label_column!r} column", path=ref_path, value=ref_cols
        )
    names, score_cols = _class_scores(pred_cols, config, pred_path)
    k = len(names)
    labels: dict[str, int] = {}
    for cid, rows in ref_rows.items():
        raw = single_row(rows, path=ref_path, case_id=cid)[config.label_column]
        if raw in names and config.mode == "multiclass":
            labels[cid] = names.index(raw)
            continue
        v = parse_number(raw, path=ref_path, case_id=cid, column=config.label_column)
        if v != int(v) or not 0 <= v < k:
            raise InputError(
                f"case {cid}: label must be a class index 0..{k - 1} or a class name",
                path=ref_path,
                value=raw,
            )
        labels[cid] = int(v)

    def parse(cid: str, rows: list[dict[str, str]]) -> NDArray[np.float64]:
        row = single_row(rows, path=pred_path, case_id=cid)
        return np.array(
            [parse_number(row[c], path=pred_path, case_id=cid, column=c) for c in score_cols]
        )

    out = TableOutcome()
    scores = _split(ref_rows, pred_rows, parse, out)
    ids = sorted(ref_rows)
    y = np.array([labels[c] for c in ids])
    rows_s: list[NDArray[np.float64]] = []
    for cid, lab in zip(ids, y, strict=True):
        if cid in scores:
            rows_s.append(scores[cid])
        elif config.mode == "binary":
            rows_s.append(np.array([1.0 - lab]))
        else:
            rows_s.append(np.eye(k)[(lab + 1) % k])
    s = np.vstack(rows_s)
    if config.mode == "binary":
        s1 = s[:, 0]
        pred_label = (s1 >= config.threshold).astype(int)
        out.dataset_metrics = classification_metrics(
            y,
            s1,
            task="binary",
            threshold=config.threshold,
            min_specificity=config.min_specificity,
            single_class=config.single_class,
        )
    else:
        pred_label = np.argmax(s, axis=1)
        out.dataset_metrics = classification_metrics(
            y, s, task="multiclass", class_names=names, single_class=config.single_class
        )
    for cid, lab, pl in zip(ids, y, pred_label, strict=True):
        out.cases[cid] = {"correct": float(lab == pl)}
    return out


def evaluate_multilabel(ref_path: Path, pred_path: Path, config: MultilabelConfig) -> TableOutcome:
    """Multi-label classification; a missing or failed case scores 1 - label on every label."""
    from medarena.evaluation.classification import classification_metrics

    ref_cols, ref_rows = read_csv_table(ref_path)
    pred_cols, pred_rows = read_csv_table(pred_path)
    names = config.labels or [c for c in ref_cols if c != "case_id"]
    for side, cols, path in (
        ("reference", ref_cols, ref_path),
        ("prediction", pred_cols, pred_path),
    ):
        absent = [c for c in names if c not in cols]
        if absent or not names:
            raise InputError(f"{side} CSV needs one column per label", path=path, value=absent)
    truth: dict[str, NDArray[np.float64]] = {}
    for cid, rows in ref_rows.items():
        row = single_row(rows, path=ref_path, case_id=cid)
        t = np.array([parse_number(row[c], path=ref_path, case_id=cid, column=c) for c in names])
        if not np.isin(t, (0.0, 1.0)).all():
            raise InputError(f"case {cid}: reference labels must be 0 or 1", path=ref_path)
        truth[cid] = t

    def parse(cid: str, rows: list[dict[str, str]]) -> NDArray[np.float64]:
        row = single_row(rows, path=pred_path, case_id=cid)
        return np.array(
            [parse_number(row[c], path=pred_path, case_id=cid, column=c) for c in names]
        )

    out = TableOutcome()
    scores = _split(ref_rows, pred_rows, parse, out)
    ids = sorted(ref_rows)
    t_all = np.vstack([truth[c] for c in ids])
    s_all = np.vstack([scores.get(c, 1.0 - truth[c]) for c in ids])
    out.dataset_metrics = classification_metrics(
        t_all,
        s_all,
        task="multilabel",
        class_names=names,
        threshold=config.threshold,
        single_class=config.single_class,
    )
    hits = (s_all >= config.threshold) == (t_all == 1.0)
    for i, cid in enumerate(ids):
        out.cases[cid] = {"hamming_accuracy": float(hits[i].mean())}
    return out


def evaluate_regression(ref_path: Path, pred_path: Path, config: RegressionConfig) -> TableOutcome:
    """Scalar regression; a missing or failed case is predicted at the end of the reference
    range farthest from its true value (the worst prediction inside the plausible range)."""
    from medarena.evaluation.regression import regression_metrics

    col = config.value_column
    ref_cols, ref_rows = read_csv_table(ref_path)
    pred_cols, pred_rows = read_csv_table(pred_path)
    for path, cols in ((ref_path, ref_cols), (pred_path, pred_cols)):
        if col not in cols:
            raise InputError(f"CSV needs a {col!r} column", path=path, value=cols)
    truth = {
        cid: parse_number(
            single_row(r, path=ref_path, case_id=cid)[col], path=ref_path, case_id=cid, column=col
        )
        for cid, r in ref_rows.items()
    }

    def parse(cid: str, rows: list[dict[str, str]]) -> float:
        return parse_number(
            single_row(rows, path=pred_path, case_id=cid)[col],
            path=pred_path,
            case_id=cid,
            column=col,
        )

    out = TableOutcome()
    preds = _split(ref_rows, pred_rows, parse, out)
    ids = sorted(ref_rows)
    lo, hi = min(truth.values()), max(truth.values())
    y = np.array([truth[c] for c in ids])
    p = np.array(
        [preds[c] if c in preds else (lo if truth[c] - lo > hi - truth[c] else hi) for c in ids]
    )
    out.dataset_metrics = regression_metrics(y, p)
    for cid, yt, yp in zip(ids, y, p, strict=True):
        out.cases[cid] = {"abs_error": float(abs(yp - yt)), "error": float(yp - yt)}
    return out


def _points(
    rows: list[dict[str, str]], value: str, *, path: Path, case_id: str
) -> list[dict[str, Any]]:
    """Detection rows of one case; a row with empty coordinates only declares the scan."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if all(row.get(k, "") == "" for k in ("x", "y", "z")):
            continue
        rec: dict[str, Any] = {"scan_id": case_id}
        for k in ("x", "y", "z", value):
            rec[k] = parse_number(row.get(k, ""), path=path, case_id=case_id, column=k)
        out.append(rec)
    return out


def evaluate_detection(ref_path: Path, pred_path: Path, config: DetectionConfig) -> TableOutcome:
    """LUNA16 detection: per-scan counts and the dataset CPM with its bootstrap interval.

    Reference rows: case_id, x, y, z, diameter_mm (a row with empty x, y, z declares a scan
    without nodules), and an optional ``excluded`` column: 1 marks an excluded finding
    (LUNA16's annotations_excluded: candidates on it are ignored), 0 or empty a nodule.
    Prediction rows: case_id, x, y, z, probability. A scan without any prediction row is
    listed as missing (it has no candidates, the worst outcome); a scan with a malformed row
    fails and is scored without candidates.
    """
    from medarena.evaluation.detection import luna16_cpm, scan_counts

    ref_cols, all_ref_rows = read_csv_table(ref_path)
    ref_rows: dict[str, list[dict[str, str]]] = {}
    excl_rows: dict[str, list[dict[str, str]]] = {}
    for cid, rows in all_ref_rows.items():
        ref_rows[cid] = []
        for row in rows:
            flag = row.get("excluded", "")
            if flag not in ("", "0", "1"):
                raise InputError(
                    f"case {cid}: column 'excluded' must be 0, 1 or empty",
                    path=ref_path,
                    value=flag,
                )
            (excl_rows.setdefault(cid, []) if flag == "1" else ref_rows[cid]).append(row)
    pred_cols, pred_rows = read_csv_table(pred_path)
    for path, cols, need in (
        (ref_path, ref_cols, ("x", "y", "z", "diameter_mm")),
        (pred_path, pred_cols, ("x", "y", "z", "probability")),
    ):
        absent = [c for c in need if c not in cols]
        if absent:
            raise InputError("detection CSV lacks required columns", path=path, value=absent)
    refs = [
        rec
        for cid, rows in ref_rows.items()
        for rec in _points(rows, "diameter_mm", path=ref_path, case_id=cid)
    ]
    out = TableOutcome()
    cands_by_case = _split(
        ref_rows,
        pred_rows,
        lambda cid, rows: _points(rows, "probability", path=pred_path, case_id=cid),
        out,
    )
    excluded = [
        rec
        for cid, rows in excl_rows.items()
        for rec in _points(rows, "diameter_mm", path=ref_path, case_id=cid)
    ]
    ids = sorted(ref_rows)
    cands = [rec for cid in ids for rec in cands_by_case.get(cid, [])]
    froc = luna16_cpm(
        cands, refs, scan_ids=ids, excluded=excluded, bootstrap=config.bootstrap, seed=config.seed
    )
    out.dataset_metrics = froc.metrics()
    counts = scan_counts(cands, refs, scan_ids=ids, excluded=excluded, threshold=config.threshold)
    for cid in ids:
        c = counts[cid]
        out.cases[cid] = {
            "n_nodules": float(c.n_nodules),
            "n_detected": float(c.n_detected),
            "n_false_positives": float(c.n_false_positives),
            "sensitivity": c.n_detected / c.n_nodules if c.n_nodules else math.nan,
        }
    return out


TableEvaluator = Callable[[Path, Path, Any], TableOutcome]
TABLE_TASKS: dict[str, tuple[type[TaskConfig], TableEvaluator]] = {
    "classification": (ClassificationConfig, evaluate_classification),
    "multilabel": (MultilabelConfig, evaluate_multilabel),
    "regression": (RegressionConfig, evaluate_regression),
    "detection": (DetectionConfig, evaluate_detection),
}
