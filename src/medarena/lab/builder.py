"""What the visual recipe builder needs: the registry as form data, datasets, validation.

The builder page (web route ``lab_builder``) builds its forms from :func:`block_catalogue`,
which turns each block's pydantic parameter model into simple typed field descriptions
(int, float, bool, str, enum with choices, list, object; ranges where the model has them).
Task, trainer and export settings come from the recipe's own models the same way, so a
block, a task type or a trainer setting added to the code appears on the page by itself.

:func:`dataset_choices` lists the datasets with their images' spatial dims and channel
count, their splits, the subsets a recipe may train or validate on (never a hidden one)
and the case labels usable as targets, read from the non-hidden cases only.
:func:`check_recipe` validates recipe YAML like ``medarena lab validate`` and also against
the catalogue (dataset, split, subsets, targets, label maps, dims and channels), returning
every problem with its line, field, value and suggestion.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sqlalchemy import select

from medarena.datasets.catalogue import Catalogue, case_records
from medarena.db.models import Dataset, Split
from medarena.errors import InputError
from medarena.lab.blocks import KINDS, REGISTRY, TASK_TYPES, nearest
from medarena.lab.recipe import (
    DatasetRef,
    ExportSettings,
    Recipe,
    RecipeError,
    TaskSpec,
    TrainerSettings,
    parse_recipe,
)
from medarena.yamlerrors import YamlProblem, problem_at

# Distinct values of a case label listed for choosing classes; more means "not a class".
MAX_CLASS_VALUES = 50

_JSON_TYPES = {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}
_RANGE_KEYS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
}


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(defs[ref.removeprefix("#/$defs/")])
    return prop


def _type_of(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema property as the builder's field type (without name and default)."""
    prop = _resolve(prop, defs)
    out: dict[str, Any] = {}
    variants = prop.get("anyOf")
    if variants:
        real = [v for v in variants if v.get("type") != "null"]
        out = _type_of(real[0], defs) if len(real) == 1 else {"type": "str"}
        if len(real) < len(variants):
            out["nullable"] = True
        return out
    if "enum" in prop:
        return {"type": "enum", "choices": list(prop["enum"])}
    if "const" in prop:
        return {"type": "enum", "choices": [prop["const"]]}
    t = prop.get("type")
    if t == "array":
        items = prop.get("items") or (prop.get("prefixItems") or [{}])[0]
        out = {"type": "list", "items": _type_of(items, defs)}
        if "minItems" in prop:
            out["min_items"] = prop["minItems"]
        if "maxItems" in prop:
            out["max_items"] = prop["maxItems"]
        return out
    if t == "object" and "properties" in prop:
        return {"type": "object", "fields": _fields_of_schema(prop, defs)}
    out = {"type": _JSON_TYPES.get(str(t), "str")}
    for key, name in _RANGE_KEYS.items():
        if key in prop:
            out[name] = prop[key]
    return out


def _fields_of_schema(schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        spec = {"name": name, **_type_of(prop, defs)}
        spec["required"] = name in required
        spec["description"] = prop.get("description", "")
        if "default" in prop:  # nested models; model_fields sets top-level defaults itself
            spec["default"] = _plain(prop["default"])
        out.append(spec)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _default(info: FieldInfo) -> Any:
    return None if info.is_required() else _plain(info.get_default(call_default_factory=True))


def model_fields(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The fields of a pydantic model as typed form fields, with their defaults.

    Each is ``{"name", "type", "required", "default", "description"}`` plus, by type:
    ``minimum`` / ``maximum`` / ``exclusive_minimum`` / ``exclusive_maximum`` (int, float),
    ``choices`` (enum), ``items``, ``min_items``, ``max_items`` (list), ``fields``
    (object), and ``nullable`` when null is allowed.
    """
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    fields = _fields_of_schema(schema, defs)
    for spec in fields:
        spec["default"] = _default(model.model_fields[spec["name"]])
    return fields


def block_catalogue() -> dict[str, Any]:
    """The registry and the recipe's settings as data for the builder's forms."""
    blocks = []
    for block in REGISTRY.values():
        blocks.append(
            {
                "name": block.name,
                "kind": block.kind,
                "summary": block.summary,
                "tasks": list(block.tasks),
                "random": block.random,
                "params": model_fields(block.params),
            }
        )
    return {
        "kinds": list(KINDS),
        "task_types": list(TASK_TYPES),
        # kinds a recipe holds a list of; the others hold exactly one block
        "list_kinds": [k for k in KINDS if _is_list(k)],
        "defaults": {k: _default(Recipe.model_fields[k]) for k in KINDS if not _is_list(k)},
        "blocks": blocks,
        "settings": {
            "task": model_fields(TaskSpec),
            "trainer": model_fields(TrainerSettings),
            "export": model_fields(ExportSettings),
            "dataset": model_fields(DatasetRef),
        },
    }


def _is_list(kind: str) -> bool:
    return get_origin(Recipe.model_fields[kind].annotation) is list


# ---------------------------------------------------------------------------- datasets


def _label_kind(values: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) < len(values):
        return "categorical"
    if all(v in (0, 1) for v in numbers):
        return "binary"
    return "numeric"


def dataset_choices(cat: Catalogue, only: str | None = None) -> list[dict[str, Any]]:
    """Datasets (all, or the one named ``only``) with splits, trainable subsets, targets.

    Only cases in a non-hidden subset are read for subsets' counts and labels, so nothing
    about a hidden subset but its name is given (its cases' labels are its secret).
    """
    query = (
        select(Dataset.name, Dataset.description, Split.name, Split.hidden_subsets)
        .outerjoin(Split, Split.dataset_id == Dataset.id)
        .order_by(Dataset.name, Split.name)
    )
    if only is not None:
        query = query.where(Dataset.name == only)
    with cat.session() as s:
        rows = s.execute(query).all()
    hidden: dict[str, dict[str, set[str]]] = defaultdict(dict)
    descriptions: dict[str, str] = {}
    for ds_name, description, split_name, hidden_subsets in rows:
        descriptions[ds_name] = description or ""
        if split_name is not None:
            hidden[ds_name][split_name] = set(hidden_subsets or ())
    out = []
    for ds_name, description in descriptions.items():
        records = case_records(cat, ds_name)
        splits = []
        for split_name, hidden_subsets in sorted(hidden[ds_name].items()):
            choice = _split_choice(records, split_name, hidden_subsets)
            choice["label_classes"] = _label_classes(cat, records, split_name, hidden_subsets)
            splits.append(choice)
        images = next(
            (_image_objects(r) for r in records if _image_objects(r)), ()
        )  # the first case with images stands for all (ingest keeps a case's channels alike)
        info = image_info(cat, images) if images else None
        out.append(
            {
                "name": ds_name,
                "description": description,
                "n_cases": len(records),
                # a 3D image of one slice (n, m, 1) serves a 2D task too
                "spatial_dims": info.spatial_dims[0] if info else None,
                "allowed_spatial_dims": list(info.spatial_dims) if info else [],
                "in_channels": info.channels if info else None,
                "splits": splits,
            }
        )
    return out


def _image_objects(record: dict[str, Any]) -> tuple[str, ...]:
    objs = sorted((o for o in record["objects"] if o["role"] == "image"), key=lambda o: o["name"])
    return tuple(o["digest"] for o in objs)


@dataclass(frozen=True)
class ImageInfo:
    """What a recipe's task must match: spatial dims that fit (preferred first), channels."""

    spatial_dims: tuple[int, ...]
    channels: int


# Objects are content-addressed, so what was read of a digest never changes.
_INFO_CACHE: dict[tuple[str, ...], ImageInfo | None] = {}
_INFO_CACHE_SIZE = 1024


def image_info(cat: Catalogue, digests: tuple[str, ...]) -> ImageInfo | None:
    """Dims and channel count of a case's image objects (None if one is not a NIfTI)."""
    if digests in _INFO_CACHE:
        return _INFO_CACHE[digests]
    from nibabel.wrapstruct import WrapStructError

    from medarena.imaging.nifti import read_nifti

    info: ImageInfo | None = None
    try:
        channels = 0
        dims: tuple[int, ...] = ()
        for digest in digests:
            img = read_nifti(cat.store.path_of(digest))
            channels += 1 if img.array.ndim == img.ndim else int(img.array.shape[-1])
            one_slice = img.ndim == 3 and img.shape[2] == 1
            dims = (2, 3) if one_slice else (img.ndim,)
        info = ImageInfo(dims, channels)
    except (InputError, OSError, ValueError, WrapStructError):
        # read_nifti lets nibabel's WrapStructError through for a file too short to hold a
        # header; no hint is better than a failed page
        info = None
    if len(_INFO_CACHE) >= _INFO_CACHE_SIZE:
        _INFO_CACHE.clear()
    _INFO_CACHE[digests] = info
    return info


# Label maps read per split to preset a segmentation's task.num_classes (a sample: a page
# must not read a whole dataset; training checks every case's values anyway).
LABEL_SAMPLE = 8
_LABEL_MAX_CACHE: dict[str, int | None] = {}


def _label_max(cat: Catalogue, digest: str) -> int | None:
    """The largest value of a stored label map (None if it cannot be read)."""
    if digest not in _LABEL_MAX_CACHE:
        from nibabel.wrapstruct import WrapStructError

        from medarena.imaging.nifti import read_nifti

        try:
            arr = read_nifti(cat.store.path_of(digest), kind="label").array
            top: int | None = int(arr.max(initial=0))
        except (InputError, OSError, ValueError, WrapStructError):
            top = None
        if len(_LABEL_MAX_CACHE) >= _INFO_CACHE_SIZE:
            _LABEL_MAX_CACHE.clear()
        _LABEL_MAX_CACHE[digest] = top
    return _LABEL_MAX_CACHE[digest]


def _label_classes(
    cat: Catalogue, records: list[dict[str, Any]], split_name: str, hidden_subsets: set[str]
) -> int | None:
    """1 + the largest label value in the label maps of up to LABEL_SAMPLE visible cases.

    Cases of a hidden subset are never read (their label maps are the test set's secret).
    """
    top: int | None = None
    read = 0
    for r in records:
        subset = r["splits"].get(split_name)
        if subset is None or subset in hidden_subsets:
            continue
        labels = [o for o in r["objects"] if o["role"] == "label"]
        if not labels:
            continue
        value = _label_max(cat, labels[0]["digest"])
        if value is not None:
            top = value if top is None else max(top, value)
        read += 1
        if read >= LABEL_SAMPLE:
            break
    return None if top is None else top + 1


def _split_choice(
    records: list[dict[str, Any]], split_name: str, hidden_subsets: set[str]
) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    hidden_names: set[str] = set()
    label_values: dict[str, list[Any]] = defaultdict(list)
    label_maps = 0
    visible = 0
    for r in records:
        subset = r["splits"].get(split_name)
        if subset is None:
            continue
        if subset in hidden_subsets:
            hidden_names.add(subset)
            continue
        visible += 1
        counts[subset] += 1
        label_maps += any(o["role"] == "label" for o in r["objects"])
        for name, value in r["labels"].items():
            if value is not None:
                label_values[name].append(value)
    targets = []
    for name, values in sorted(label_values.items()):
        distinct = sorted({str(v) for v in values})
        targets.append(
            {
                "name": name,
                "kind": _label_kind(values),
                "n_cases": len(values),
                "values": distinct if len(distinct) <= MAX_CLASS_VALUES else None,
            }
        )
    return {
        "name": split_name,
        "subsets": [{"name": k, "n_cases": n} for k, n in sorted(counts.items())],
        "hidden_subsets": sorted(hidden_names | hidden_subsets),
        "n_cases": visible,
        "label_maps": label_maps,
        "targets": targets,
    }


# ---------------------------------------------------------------------------- validation

_SUGGESTION = re.compile(r"did you mean '([^']*)'\?")
_FIELD_PART = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


@dataclass
class Problem:
    """One problem of a recipe, as the builder shows it next to its YAML line."""

    line: int | None
    field: str
    value: Any
    message: str
    suggestion: str | None = None


@dataclass
class CheckResult:
    ok: bool
    problems: list[Problem] = field(default_factory=list)
    recipe: str | None = None  # the normalised YAML (every default written out) when ok
    data: dict[str, Any] | None = None  # the same as data, for a form to load


def _loc(field_name: str) -> tuple[int | str, ...]:
    """``preprocess[0].block`` -> ("preprocess", 0, "block")."""
    out: list[int | str] = []
    for m in _FIELD_PART.finditer(field_name):
        out.append(int(m.group(1)) if m.group(1) is not None else m.group(2))
    return tuple(out)


def _value_at(data: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        found_in_dict = isinstance(data, dict) and part in data
        if found_in_dict or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        ):
            data = data[part]
        else:
            return None
    return data if isinstance(data, str | int | float | bool | list) else None


def _problem(p: YamlProblem, data: Any) -> Problem:
    m = _SUGGESTION.search(p.message)
    return Problem(
        p.line, p.field, _value_at(data, _loc(p.field)), p.message, m.group(1) if m else None
    )


def _catalogue_problems(
    cat: Catalogue, recipe: Recipe
) -> list[tuple[tuple[int | str, ...], str, str | None]]:
    """Problems of the recipe's dataset part against the catalogue: (loc, message, guess)."""
    ds = recipe.dataset
    found = dataset_choices(cat, ds.name)
    if not found:
        with cat.session() as s:
            names = list(s.scalars(select(Dataset.name).order_by(Dataset.name)))
        guess = nearest(ds.name, names)
        msg = f"no dataset named {ds.name!r} in the catalogue"
        msg += f"; did you mean {guess!r}?" if guess else ""
        return [(("dataset", "name"), msg + f" (datasets: {', '.join(names) or 'none'})", guess)]
    splits = {s["name"]: s for s in found[0]["splits"]}
    if ds.split not in splits:
        guess = nearest(ds.split, list(splits))
        msg = f"dataset {ds.name!r} has no split {ds.split!r}"
        msg += f"; did you mean {guess!r}?" if guess else ""
        known = ", ".join(splits) or "none; make one with medarena datasets split"
        return [(("dataset", "split"), msg + f" (splits: {known})", guess)]
    split = splits[ds.split]
    subsets = [s["name"] for s in split["subsets"]]
    out: list[tuple[tuple[int | str, ...], str, str | None]] = []
    dims, channels = found[0]["allowed_spatial_dims"], found[0]["in_channels"]
    if dims and recipe.task.spatial_dims not in dims:
        out.append(
            (
                ("task", "spatial_dims"),
                f"the images of dataset {ds.name!r} are {dims[0]}D; task.spatial_dims is "
                f"{recipe.task.spatial_dims} (value {recipe.task.spatial_dims!r})",
                None,
            )
        )
    if channels is not None and recipe.task.in_channels != channels:
        out.append(
            (
                ("task", "in_channels"),
                f"the cases of dataset {ds.name!r} have {channels} image channel(s); "
                f"task.in_channels is {recipe.task.in_channels}",
                None,
            )
        )
    for key in ("train", "validation"):
        name = getattr(ds, key)
        if name in split["hidden_subsets"]:
            out.append(
                (
                    ("dataset", key),
                    f"subset {name!r} of split {ds.split!r} is hidden (a test set): the lab "
                    f"never trains or validates on it (subsets: {', '.join(subsets)})",
                    None,
                )
            )
        elif name not in subsets:
            guess = nearest(name, subsets)
            msg = f"split {ds.split!r} has no subset {name!r}"
            msg += f"; did you mean {guess!r}?" if guess else ""
            out.append((("dataset", key), msg + f" (subsets: {', '.join(subsets)})", guess))
    labels = [t["name"] for t in split["targets"]]
    wanted: list[tuple[tuple[int | str, ...], str]] = []
    if ds.target is not None:
        wanted.append((("dataset", "target"), ds.target))
    wanted += [(("dataset", "targets", i), t) for i, t in enumerate(ds.targets or [])]
    for loc, name in wanted:
        if name not in labels:
            guess = nearest(name, labels)
            msg = f"no case of split {ds.split!r} has a label {name!r}"
            msg += f"; did you mean {guess!r}?" if guess else ""
            out.append((loc, msg + f" (labels: {', '.join(labels) or 'none'})", guess))
    if recipe.task.type == "segmentation" and split["label_maps"] == 0:
        out.append((("task", "type"), f"split {ds.split!r} has no label maps to segment", None))
    return out


def check_recipe(text: str, cat: Catalogue | None = None) -> CheckResult:
    """Validate recipe YAML ``text`` (and, given ``cat``, its data in the catalogue).

    Never raises for a bad recipe: every problem comes back with its line.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    try:
        recipe = parse_recipe(text, "recipe")
    except RecipeError as exc:
        return CheckResult(False, [_problem(p, data) for p in exc.problems])
    if cat is not None:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        assert root is not None  # parse_recipe read a mapping from it
        problems = []
        for loc, message, guess in _catalogue_problems(cat, recipe):
            p = problem_at(root, loc, message)
            problems.append(Problem(p.line, p.field, _value_at(data, loc), message, guess))
        if problems:
            return CheckResult(False, problems)
    data = normalised(recipe)
    return CheckResult(True, [], yaml.safe_dump(data, sort_keys=False), data)


def normalised(recipe: Recipe) -> dict[str, Any]:
    """The recipe as data with every default written out, block parameters included."""
    data = recipe.model_dump(mode="json")
    for loc, _kind, ref in recipe.refs():
        target: Any = data
        for part in loc:
            target = target[part]
        target["params"] = recipe.params_of(ref).model_dump(mode="json")
    return data
