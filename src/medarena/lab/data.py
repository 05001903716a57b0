"""Cases of a recipe's dataset split, read from the catalogue into arrays.

Images of a case (role ``image``, one object per channel, in name order) are stacked
channel-first; a segmentation label map (role ``label``) becomes one more channel-first
array; classification and regression targets come from the case label ``dataset.target``.
Detection cases carry their findings (role ``findings``, world mm; see
``medarena.datasets.findings``), drawn as the target heatmap on the image grid
(``medarena.lab.detection.gaussian_heatmap``; mode segmentation: their spheres as a label
map, ``sphere_mask``). Image-to-image cases take their target image
from the object of role ``label`` (as the low-dose CT demo stores it), read as an image.
Only case keys are carried along, never patient identifiers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from medarena.datasets.catalogue import Catalogue, case_records
from medarena.errors import InputError
from medarena.imaging.image import Image
from medarena.imaging.nifti import read_nifti
from medarena.lab.recipe import Recipe


@dataclass
class CaseArrays:
    """One case ready for MONAI: channel-first arrays and the RAS affine of its grid."""

    key: str
    image: np.ndarray  # (C, *spatial) float32
    affine: np.ndarray  # 4x4 voxel -> RAS (mm)
    label: np.ndarray | None = None  # (1, *spatial) label map, target heatmap or target image
    findings: dict[str, list[dict[str, float]]] | None = None  # detection: nodules, excluded
    target: float | int | list[float] | None = None  # class index, 0/1 labels or a value
    attributes: dict[str, str] | None = None  # sex, site, age_band (for subgroup metrics)


def _attributes(rec: dict[str, Any]) -> dict[str, str]:
    # the evaluation engine's default age bands ([0,18), [18,40), [40,65), [65,inf))
    from medarena.evaluation.subgroups import age_band

    out = {k: str(rec[k]) for k in ("sex", "site") if rec.get(k) not in (None, "")}
    if rec.get("age_years") is not None:
        out["age_band"] = age_band(float(rec["age_years"]))
    return out


@dataclass
class SplitData:
    train: list[CaseArrays]
    validation: list[CaseArrays]
    class_names: list[str]
    dataset_version: str  # digest of the cases, objects, subsets and targets used


def _dataset_version(recipe: Recipe, subsets: dict[str, list[dict[str, Any]]]) -> str:
    target = recipe.dataset.target
    rows = sorted(
        [
            r["case_key"],
            subset,
            sorted(o["digest"] for o in r["objects"]),
            None if target is None else str(r["labels"].get(target)),
        ]
        for subset, recs in subsets.items()
        for r in recs
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _channel_first(array: np.ndarray, ndim: int) -> np.ndarray:
    if array.ndim == ndim:
        return array[None]
    return np.moveaxis(array, -1, 0)


def _voxels(img: Image, key: str, recipe: Recipe) -> np.ndarray:
    """The voxels with task.spatial_dims axes; a 3D image of one slice (n, m, 1) serves 2D."""
    ndim = recipe.task.spatial_dims
    if img.ndim == ndim:
        return img.array
    if ndim == 2 and img.ndim == 3 and img.shape[2] == 1:
        return img.array[:, :, 0]
    raise InputError(
        f"case {key!r} is {img.ndim}D (shape {list(img.shape)}) but task.spatial_dims is "
        f"{ndim} (a 2D task also takes 3D images of one slice)",
        path=recipe.dataset.name,
    )


def _read_case(cat: Catalogue, rec: dict[str, Any], recipe: Recipe) -> CaseArrays:
    key = rec["case_key"]
    ndim = recipe.task.spatial_dims
    objs = sorted((o for o in rec["objects"] if o["role"] == "image"), key=lambda o: o["name"])
    if not objs:
        raise InputError(f"case {key!r} has no image object", path=recipe.dataset.name)
    channels = []
    ref = None
    for o in objs:
        img = read_nifti(cat.store.path_of(o["digest"]))
        voxels = _voxels(img, key, recipe)
        ref = ref or img
        channels.append(_channel_first(voxels.astype(np.float32), ndim))
    assert ref is not None
    image = np.concatenate(channels, axis=0)
    if image.shape[0] != recipe.task.in_channels:
        raise InputError(
            f"case {key!r} has {image.shape[0]} image channels but task.in_channels is "
            f"{recipe.task.in_channels}",
            path=recipe.dataset.name,
        )
    out = CaseArrays(key, image, ref.nifti_affine())
    if recipe.task.type == "detection":
        _read_findings(cat, rec, recipe, out)
    elif recipe.task.type == "image_to_image":
        _read_target_image(cat, rec, recipe, out)
    elif recipe.task.type == "segmentation":
        labels = [o for o in rec["objects"] if o["role"] == "label"]
        if not labels:
            raise InputError(
                f"case {key!r} has no label map (segmentation needs one per case)",
                path=recipe.dataset.name,
            )
        lab = read_nifti(cat.store.path_of(labels[0]["digest"]), kind="label")
        arr = _voxels(lab, key, recipe).astype(np.int64)
        if arr.max(initial=0) >= recipe.task.num_classes:
            raise InputError(
                f"case {key!r} has label value {int(arr.max())} but task.num_classes is "
                f"{recipe.task.num_classes} (values must be 0..num_classes-1)",
                path=recipe.dataset.name,
            )
        out.label = arr[None].astype(np.float32)
    return out


def _read_findings(cat: Catalogue, rec: dict[str, Any], recipe: Recipe, out: CaseArrays) -> None:
    from medarena.datasets.findings import FINDINGS_ROLE
    from medarena.lab.detection import gaussian_heatmap, sphere_mask

    key = rec["case_key"]
    objs = [o for o in rec["objects"] if o["role"] == FINDINGS_ROLE]
    if len(objs) != 1:
        raise InputError(
            f"case {key!r} has {len(objs)} findings objects; detection needs exactly one per "
            "case (store them with medarena datasets attach-findings)",
            path=recipe.dataset.name,
        )
    try:
        data = json.loads(cat.store.get_bytes(objs[0]["digest"]))
        found = {"nodules": list(data["nodules"]), "excluded": list(data["excluded"])}
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"case {key!r}: its findings object is not the findings JSON "
            '({"nodules": [...], "excluded": [...]})',
            path=recipe.dataset.name,
        ) from None
    settings = recipe.task.detection
    assert settings is not None  # TaskSpec fills it in for detection
    shape = out.image.shape[1:]
    try:
        if settings.mode == "segmentation":
            target = sphere_mask(shape, out.affine, found["nodules"]).astype(np.float32)
        else:
            target = gaussian_heatmap(
                shape, out.affine, found["nodules"], sigma_scale=settings.sigma_scale
            )
    except InputError as exc:
        raise InputError(
            f"case {key!r}: {exc.rule}", path=recipe.dataset.name, value=exc.value
        ) from None
    out.label = target[None]
    out.findings = found


def _read_target_image(
    cat: Catalogue, rec: dict[str, Any], recipe: Recipe, out: CaseArrays
) -> None:
    key = rec["case_key"]
    objs = [o for o in rec["objects"] if o["role"] == "label"]
    if not objs:
        raise InputError(
            f"case {key!r} has no target image (image_to_image reads the object of role "
            "'label', one per case)",
            path=recipe.dataset.name,
        )
    target = read_nifti(cat.store.path_of(objs[0]["digest"]))
    voxels = _voxels(target, key, recipe).astype(np.float32)
    arr = _channel_first(voxels, recipe.task.spatial_dims)
    if arr.shape[0] != 1:
        raise InputError(
            f"case {key!r}: the target image has {arr.shape[0]} channels; image_to_image "
            "predicts one",
            path=recipe.dataset.name,
        )
    if arr.shape[1:] != out.image.shape[1:]:
        raise InputError(
            f"case {key!r}: target image shape {list(arr.shape[1:])} differs from the input "
            f"image shape {list(out.image.shape[1:])}",
            path=recipe.dataset.name,
        )
    out.label = arr


def load_split(cat: Catalogue, recipe: Recipe) -> SplitData:
    """The train and validation cases of the recipe's split, with targets resolved."""
    ds = recipe.dataset
    records = case_records(cat, ds.name)
    known_splits = sorted({s for r in records for s in r["splits"]})
    if ds.split not in known_splits:
        raise InputError(
            f"dataset {ds.name!r} has no split {ds.split!r} "
            f"(splits: {', '.join(known_splits) or 'none; make one with medarena datasets split'})",
            path="dataset.split",
            value=ds.split,
        )
    subsets: dict[str, list[dict[str, Any]]] = {ds.train: [], ds.validation: []}
    for r in records:
        sub = r["splits"].get(ds.split)
        if sub in subsets:
            subsets[sub].append(r)
    for name, recs in subsets.items():
        if not recs:
            raise InputError(
                f"subset {name!r} of split {ds.split!r} has no cases", path="dataset", value=name
            )
    class_names: list[str] = []
    names = ds.targets or ([ds.target] if ds.target else [])
    for r in records:
        for t in names:
            if r["splits"].get(ds.split) in subsets and r["labels"].get(t) is None:
                raise InputError(
                    f"case {r['case_key']!r} has no label {t!r}",
                    path="dataset.targets" if ds.targets else "dataset.target",
                    value=t,
                )
    if recipe.task.type == "multilabel":
        class_names = list(names)
    if recipe.task.type == "classification":
        values = sorted({str(r["labels"][ds.target]) for recs in subsets.values() for r in recs})
        class_names = recipe.task.class_names or values
        unknown = [v for v in values if v not in class_names]
        if unknown:
            raise InputError(
                f"label values {unknown} are not in task.class_names {class_names}",
                path="task.class_names",
            )
        if len(class_names) != recipe.task.num_classes:
            raise InputError(
                f"task.num_classes is {recipe.task.num_classes} but there are "
                f"{len(class_names)} classes {class_names}",
                path="task.num_classes",
                hint="set task.class_names to list every class",
            )

    def read(recs: list[dict[str, Any]]) -> list[CaseArrays]:
        out = []
        for r in recs:
            case = _read_case(cat, r, recipe)
            case.attributes = _attributes(r)
            if recipe.task.type == "classification":
                case.target = class_names.index(str(r["labels"][ds.target]))
            elif recipe.task.type == "multilabel":
                values = [r["labels"][t] for t in names]
                if any(v not in (0, 1, 0.0, 1.0) for v in values):
                    raise InputError(
                        f"case {r['case_key']!r}: multilabel labels {names} must be 0 or 1",
                        value=values,
                    )
                case.target = [float(v) for v in values]
            elif recipe.task.type == "regression":
                try:
                    case.target = float(r["labels"][ds.target])
                except (TypeError, ValueError):
                    raise InputError(
                        f"case {r['case_key']!r}: label {ds.target!r} is not a number",
                        value=r["labels"][ds.target],
                    ) from None
            out.append(case)
        return out

    train, validation = read(subsets[ds.train]), read(subsets[ds.validation])
    if recipe.task.type == "detection" and not any(
        c.findings and c.findings["nodules"] for c in validation
    ):
        raise InputError(
            f"the validation subset {ds.validation!r} holds no finding: FROC sensitivity "
            "is undefined",
            path="dataset.validation",
            value=ds.validation,
            hint="choose a split whose validation cases have findings",
        )
    return SplitData(train, validation, class_names, _dataset_version(recipe, subsets))
