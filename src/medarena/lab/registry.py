"""The model registry: every trained model with its recipe, data, metrics, curves and card.

``register_model`` stores a finished run: the weights and the ONNX file go to the object
store (content-addressed), the rest to the ``lab_models`` table. Versions count up per
model name (the recipe's name). Nothing about patients is stored: the dataset is named by
its name, split and a digest of the cases, objects, subsets and targets the run used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from medarena.datasets.catalogue import Catalogue
from medarena.db.lab_models import LabModel
from medarena.errors import InputError, NotFoundError
from medarena.lab.recipe import Recipe


@dataclass
class ModelInfo:
    name: str
    version: int
    task: str
    dataset: str
    split: str
    dataset_version: str
    metrics: dict[str, float]
    created_at: str
    weights_digest: str
    onnx_digest: str | None
    onnx_size: int | None
    export: dict[str, Any]
    model_card: dict[str, Any]
    curves: list[dict[str, Any]]
    recipe_yaml: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def _json_safe(value: Any) -> Any:
    # PostgreSQL's json type refuses NaN/Infinity (an undefined AUC is NaN)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


SUBGROUP_ATTRIBUTES: tuple[str, ...] = ("sex", "age_band", "site")


def subgroup_metrics(
    per_case: dict[str, dict[str, float]], attributes: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """The validation metric per subgroup (evaluation engine's ``subgroup_analysis``).

    One analysis per attribute that at least one validation case has; per-case metrics
    are Dice (segmentation), ``correct`` (classification), ``abs_error`` (regression),
    ``sensitivity`` (detection; undefined, so left out, for a case without findings) and
    ``mae`` (image_to_image). An attribute none of whose cases has the metric is skipped.
    """
    from medarena.evaluation.subgroups import subgroup_analysis

    if not per_case:
        return []
    metric = next(iter(next(iter(per_case.values()))))
    out = []
    for attr in SUBGROUP_ATTRIBUTES:
        if not any(attr in a for a in attributes.values()):
            continue
        try:
            analysis = subgroup_analysis(
                per_case, attributes, metric=metric, by=attr, bootstrap=200
            )
        except InputError:  # no case has both the metric and the attribute
            continue
        out.append(analysis.model_dump(mode="json"))
    return out


def model_card(
    recipe: Recipe,
    *,
    subgroups: list[dict[str, Any]],
    dataset_version: str,
    n_train: int,
    n_validation: int,
    class_names: list[str],
    metrics: dict[str, float],
    stopped: str,
    export: dict[str, Any] | None,
) -> dict[str, Any]:
    """Intended use, training data, metrics and limitations, from what the run knows."""
    t = recipe.task
    settings = t.detection or t.image_to_image  # task-specific settings, if any
    limitations = [
        f"Trained on {n_train} cases and validated on {n_validation} cases of one dataset "
        f"split; performance on other sites, scanners or populations is unknown.",
        "Validation metrics are computed in the preprocessed grid (after resampling), "
        "not in each case's original geometry.",
        "A research model: not a medical device, not for clinical decisions.",
    ]
    if not subgroups:
        limitations.append(
            "No subgroup metrics: the validation cases carry no sex, age or site attribute."
        )
    if stopped == "time_budget":
        limitations.append("Training stopped at its time budget before the last epoch.")
    if t.detection is not None:
        d = t.detection
        limitations.append(
            f"Detection by {d.mode}: candidates are read with probability >= {d.threshold:g}, "
            f"at least {d.min_distance_mm:g} mm apart, at most {d.max_candidates} per scan; "
            f"the FROC / CPM comes from {n_validation} validation scans only."
        )
    if t.image_to_image is not None:
        limitations.append(
            "Image-to-image metrics (PSNR, SSIM, MAE) are computed in the preprocessed "
            f"intensity scale with data range {t.image_to_image.data_range!r}, not in the "
            "images' original units."
        )
    undefined = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)]
    if undefined:
        limitations.append(
            f"Undefined on the validation subset: {', '.join(undefined)} "
            "(e.g. a single class present)."
        )
    return _json_safe(
        {
            "intended_use": recipe.description
            or f"Research {t.spatial_dims}D {t.type} model trained in the medarena lab.",
            "training_data": {
                "dataset": recipe.dataset.name,
                "split": recipe.dataset.split,
                "dataset_version": dataset_version,
                "train_subset": recipe.dataset.train,
                "train_cases": n_train,
                "validation_subset": recipe.dataset.validation,
                "validation_cases": n_validation,
                "target": recipe.dataset.target,
                "class_names": class_names,
                "in_channels": t.in_channels,
                "patch_size": recipe.trainer.patch_size,
                "task_settings": None if settings is None else settings.model_dump(mode="json"),
            },
            "metrics": {
                "validation": metrics,
                "subgroups": subgroups,
                "computed_by": "medarena.evaluation",
            },
            "limitations": limitations,
            "export": export or {},
        }
    )


def register_model(
    cat: Catalogue,
    recipe: Recipe,
    recipe_digest: str,
    out_dir: Path,
    *,
    card: dict[str, Any],
    metrics: dict[str, float],
    curves: list[dict[str, Any]],
    export: dict[str, Any] | None,
) -> ModelInfo:
    """Store a finished run's model (files from ``out_dir``) as the next version."""
    weights = cat.store.put_file(out_dir / "model.pt")
    onnx_digest = onnx_size = None
    if export is not None:
        onnx_digest = cat.store.put_file(out_dir / export["file"])
        onnx_size = cat.store.size(onnx_digest)
    with cat.session() as s, s.begin():
        last = s.scalar(select(func.max(LabModel.version)).where(LabModel.name == recipe.name))
        row = LabModel(
            name=recipe.name,
            version=(last or 0) + 1,
            task=recipe.task.type,
            dataset_name=recipe.dataset.name,
            dataset_split=recipe.dataset.split,
            dataset_version=card["training_data"]["dataset_version"],
            recipe_yaml=recipe.to_yaml(),
            recipe_digest=recipe_digest,
            metrics={k: float(v) for k, v in metrics.items()},
            curves=_json_safe(curves),
            model_card=card,
            weights_digest=weights,
            onnx_digest=onnx_digest,
            onnx_size=onnx_size,
            export=_json_safe(export or {}),
        )
        s.add(row)
        s.flush()
        return _info(row)


def _info(row: LabModel) -> ModelInfo:
    return ModelInfo(
        name=row.name,
        version=row.version,
        task=row.task,
        dataset=row.dataset_name,
        split=row.dataset_split,
        dataset_version=row.dataset_version,
        metrics=dict(row.metrics),
        created_at=row.created_at.isoformat(),
        weights_digest=row.weights_digest,
        onnx_digest=row.onnx_digest,
        onnx_size=row.onnx_size,
        export=dict(row.export),
        model_card=dict(row.model_card),
        curves=list(row.curves),
        recipe_yaml=row.recipe_yaml,
    )


def list_models(cat: Catalogue, name: str | None = None) -> list[ModelInfo]:
    """Registered models (all, or the versions of one name), by name then version."""
    with cat.session() as s:
        q = select(LabModel).order_by(LabModel.name, LabModel.version)
        if name is not None:
            q = q.where(LabModel.name == name)
        return [_info(r) for r in s.scalars(q)]


def get_model(cat: Catalogue, ref: str) -> ModelInfo:
    """The model ``name`` (latest version) or ``name:version``."""
    name, _, version = ref.partition(":")
    with cat.session() as s:
        q = select(LabModel).where(LabModel.name == name)
        if version:
            if not version.isdigit():
                raise NotFoundError(f"model version must be a number, got {version!r} in {ref!r}")
            q = q.where(LabModel.version == int(version))
        row = s.scalars(q.order_by(LabModel.version.desc()).limit(1)).one_or_none()
        if row is None:
            known = s.scalars(select(LabModel.name).distinct().order_by(LabModel.name)).all()
            raise NotFoundError(
                f"no model {ref!r}; registered models: {', '.join(known) or '(none)'}"
            )
        return _info(row)


def compare_models(cat: Catalogue, refs: list[str]) -> dict[str, Any]:
    """Validation metrics of several models side by side, with what they were trained on.

    Rows are the union of the models' metric names; a model without a metric has None.
    ``same_data`` says whether all models saw the same dataset version (else their
    validation figures are not comparable case for case).
    """
    if len(refs) < 2:
        raise InputError("compare needs at least two models", value=refs)
    models = [get_model(cat, r) for r in refs]
    names: list[str] = []
    for m in models:
        names += [k for k in m.metrics if k not in names]
    return {
        "models": [m.ref for m in models],
        "task": [m.task for m in models],
        "dataset_version": [m.dataset_version for m in models],
        "same_data": len({m.dataset_version for m in models}) == 1,
        "metrics": {k: [m.metrics.get(k) for m in models] for k in names},
    }
