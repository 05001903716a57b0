"""Training recipes: a YAML file validated into a typed Recipe.

A recipe names the dataset and split, the task, the blocks (from the registry in
``medarena.lab.blocks``), the trainer settings and the export. ``parse_recipe`` reports
every problem with its YAML line, the offending value and, for a misspelt block or
parameter name, the nearest valid one. The YAML line lookup is the challenge spec's
(``medarena.challenges.spec``), so both files report errors the same way.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medarena.errors import InputError
from medarena.lab.blocks import (
    DETECTION_LOSSES,
    REGISTRY,
    Block,
    Kind,
    Params,
    TaskType,
    channel_problems,
    nearest,
)
from medarena.yamlerrors import YamlProblem, parse_mapping, problem_at


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockRef(_Strict):
    """A block by name plus its parameters (checked against the block's own model)."""

    block: str = Field(..., description="Name of a block in the registry (medarena lab blocks).")
    params: dict[str, Any] = Field(default_factory=dict, description="The block's parameters.")


class DatasetRef(_Strict):
    name: str = Field(..., description="Dataset in the catalogue.")
    split: str = Field("default", description="Split of that dataset.")
    train: str = Field("train", description="Subset trained on.")
    validation: str = Field("validation", description="Subset validated on.")
    target: str | None = Field(
        None, description="Case label holding the class / value (classification, regression)."
    )
    targets: list[str] | None = Field(
        None, description="Multilabel: the case labels (each 0 or 1), one output per label."
    )


class DetectionSettings(_Strict):
    """Detection through heatmaps or segmentation: the targets and how candidates are read."""

    mode: Literal["heatmap", "segmentation"] = Field(
        "heatmap",
        description="heatmap: one output channel trained on Gaussian blobs, candidates at "
        "its peaks; segmentation: two classes trained on the findings' spheres, candidates "
        "at connected components of the foreground probability.",
    )
    sigma_scale: float = Field(
        0.5,
        gt=0,
        description="Heatmap mode: target blob width: sigma = sigma_scale * finding radius "
        "(mm), at least the largest voxel size; blobs are cut off at 3 sigma.",
    )
    threshold: float = Field(
        0.1, ge=0, le=1, description="Candidates: heatmap peaks with probability >= this."
    )
    min_distance_mm: float = Field(
        5.0,
        ge=0,
        description="Candidates: a peak (or component centre) closer than this (mm) to a "
        "stronger one is dropped.",
    )
    max_candidates: int = Field(
        100, ge=1, description="Candidates kept per case, strongest first (LUNA16: 100)."
    )


class ImageToImageSettings(_Strict):
    """Image-to-image (denoising, synthesis): the target image and the metrics' data range."""

    data_range: float | Literal["ref_max", "ref_range"] = Field(
        "ref_range",
        description="Data range of PSNR/SSIM in validation (evaluation engine convention: "
        "ref_max, ref_range or a number), in the preprocessed intensity scale.",
    )
    residual: bool = Field(
        False,
        description="The network predicts a correction added to the first input channel "
        "(output = input + network(input)); suits denoising.",
    )

    @model_validator(mode="after")
    def _positive(self) -> ImageToImageSettings:
        if isinstance(self.data_range, float) and not self.data_range > 0:
            raise ValueError(f"data_range {self.data_range} must be positive")
        return self


class TaskSpec(_Strict):
    type: TaskType
    spatial_dims: Literal[2, 3] = Field(..., description="2 or 3 spatial axes.")
    num_classes: int = Field(
        2,
        ge=1,
        description="Classes (segmentation: including background; regression, detection, "
        "image_to_image: ignored).",
    )
    in_channels: int = Field(1, ge=1, description="Image channels (modalities) per case.")
    class_names: list[str] | None = Field(
        None, description="Classification: the label values in class-index order."
    )
    detection: DetectionSettings | None = Field(
        None, description="Detection only: heatmap targets and candidate extraction."
    )
    image_to_image: ImageToImageSettings | None = Field(
        None, description="Image-to-image only: validation data range, residual output."
    )

    @model_validator(mode="after")
    def _task_settings(self) -> TaskSpec:
        for name in ("detection", "image_to_image"):
            if getattr(self, name) is not None and self.type != name:
                raise ValueError(f"task.{name} settings need task.type {name!r}")
        if self.type == "detection" and self.detection is None:
            self.detection = DetectionSettings()
        if self.type == "image_to_image" and self.image_to_image is None:
            self.image_to_image = ImageToImageSettings()
        return self


class SlidingWindow(_Strict):
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of neighbouring windows.")
    mode: Literal["constant", "gaussian"] = Field("gaussian", description="Blending of windows.")


class TrainerSettings(_Strict):
    epochs: int = Field(1, ge=1, description="Epochs to train (the run stops at this epoch).")
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop (after the current step) once this many seconds passed."
    )
    batch_size: int = Field(2, ge=1, description="Samples per step.")
    patch_size: list[int] = Field(
        ...,
        description="Training patch (segmentation, detection, image_to_image) or input size "
        "(image-level tasks).",
    )
    sliding_window: SlidingWindow | None = Field(
        default_factory=SlidingWindow,
        description="Validation of segmentation, detection and image_to_image by sliding "
        "windows of patch_size (null: whole image).",
    )
    seed: int = Field(0, description="Seed of weights, shuffling and augmentation.")
    val_every: int = Field(1, ge=1, description="Validate every n epochs (and at the end).")
    checkpoint_every: int = Field(1, ge=1, description="Write a checkpoint every n epochs.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if present.")

    @model_validator(mode="after")
    def _patch_positive(self) -> TrainerSettings:
        if any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} must be positive")
        return self


class ExportSettings(_Strict):
    onnx: bool = Field(True, description="Export the trained model to a single ONNX file.")
    tolerance: float = Field(
        1e-4, gt=0, description="Max abs difference allowed between ONNX Runtime and PyTorch."
    )
    opset: int = Field(17, ge=13, description="ONNX opset version.")


class Recipe(_Strict):
    """A training run as data; saved next to what it produced."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
    description: str = ""
    dataset: DatasetRef
    task: TaskSpec
    preprocess: list[BlockRef] = Field(default_factory=list)
    augment: list[BlockRef] = Field(default_factory=list)
    network: BlockRef
    loss: BlockRef
    optimizer: BlockRef = Field(default_factory=lambda: BlockRef(block="adam"))
    schedule: BlockRef = Field(default_factory=lambda: BlockRef(block="none"))
    trainer: TrainerSettings
    export: ExportSettings = Field(default_factory=ExportSettings)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if len(self.trainer.patch_size) != self.task.spatial_dims:
            raise ValueError(
                f"trainer.patch_size {self.trainer.patch_size} needs {self.task.spatial_dims} "
                "values (task.spatial_dims)"
            )
        if self.task.type in ("classification", "regression") and not self.dataset.target:
            raise ValueError(
                f"a {self.task.type} recipe needs dataset.target (the case label to learn)"
            )
        if self.task.type == "multilabel" and not self.dataset.targets:
            raise ValueError("a multilabel recipe needs dataset.targets (the 0/1 case labels)")
        return self

    def refs(self) -> list[tuple[tuple[str | int, ...], Kind, BlockRef]]:
        """Every block reference with its location in the recipe and the kind it must be."""
        out: list[tuple[tuple[str | int, ...], Kind, BlockRef]] = []
        out += [(("preprocess", i), "preprocess", r) for i, r in enumerate(self.preprocess)]
        out += [(("augment", i), "augment", r) for i, r in enumerate(self.augment)]
        out += [
            (("network",), "network", self.network),
            (("loss",), "loss", self.loss),
            (("optimizer",), "optimizer", self.optimizer),
            (("schedule",), "schedule", self.schedule),
        ]
        return out

    def params_of(self, ref: BlockRef) -> Params:
        """The validated parameters of ``ref`` (the recipe was checked by parse_recipe)."""
        return REGISTRY[ref.block].params.model_validate(ref.params)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class RecipeError(InputError):
    """A recipe that cannot be used; ``problems`` lists each with its line."""

    def __init__(self, source: str, problems: list[YamlProblem]) -> None:
        self.problems = problems
        listed = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid recipe: {listed}", path=source)


# Model of the mapping at a location (for "did you mean" on unknown field names).
_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): Recipe,
    ("dataset",): DatasetRef,
    ("task",): TaskSpec,
    ("task", "detection"): DetectionSettings,
    ("task", "image_to_image"): ImageToImageSettings,
    ("trainer",): TrainerSettings,
    ("trainer", "sliding_window"): SlidingWindow,
    ("export",): ExportSettings,
}


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    named = tuple(p for p in loc if isinstance(p, str))
    if named in _MODELS_AT:
        return _MODELS_AT[named]
    if named and named[0] in ("preprocess", "augment", "network", "loss", "optimizer", "schedule"):
        return BlockRef if len(named) == 1 else None
    return None


def _unknown_field(loc: tuple[int | str, ...], known: list[str]) -> str:
    name = str(loc[-1])
    guess = nearest(name, known)
    msg = f"unknown field {name!r}"
    if guess:
        msg += f"; did you mean {guess!r}?"
    return msg + f" (valid: {', '.join(known)})"


def _value_problem(err: Any) -> str:
    """The message of a bad value; a misspelt choice of a fixed list gets the nearest one."""
    msg = f"{err['msg'].removeprefix('Value error, ')} (value {err['input']!r})"
    if err["type"] == "literal_error" and isinstance(err["input"], str):
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        guess = nearest(err["input"], choices)
        if guess:
            msg += f"; did you mean {guess!r}?"
    return msg


def _raw_refs(data: Any) -> list[tuple[tuple[str | int, ...], Kind, BlockRef]]:
    """The block references of a recipe whose schema failed, those that parse on their own.

    So that a problem elsewhere (say, ``trainer.batch_size: two``) does not hide a misspelt
    block or parameter name: every problem is reported at once.
    """
    out: list[tuple[tuple[str | int, ...], Kind, BlockRef]] = []
    if not isinstance(data, dict):
        return out
    lists: tuple[Kind, ...] = ("preprocess", "augment")
    singles: tuple[Kind, ...] = ("network", "loss", "optimizer", "schedule")
    for kind in lists:
        items = data.get(kind)
        for i, item in enumerate(items if isinstance(items, list) else []):
            with contextlib.suppress(ValidationError):  # reported by the schema
                out.append(((kind, i), kind, BlockRef.model_validate(item)))
    for kind in singles:
        if kind in data:
            with contextlib.suppress(ValidationError):
                out.append(((kind,), kind, BlockRef.model_validate(data[kind])))
    return out


def _check_blocks(recipe: Recipe) -> list[tuple[tuple[int | str, ...], str]]:
    """Problems of block names, kinds, tasks and parameters, as (location, message)."""
    problems = _check_refs(recipe.refs(), recipe.task.type, recipe.task.detection)
    pre = [(r.block, r.params) for r in recipe.preprocess]
    for i, msg in channel_problems(pre, recipe.task.in_channels):
        problems.append((("preprocess", i, "params", "channels"), msg))
    return problems


def _check_refs(
    refs: list[tuple[tuple[str | int, ...], Kind, BlockRef]],
    task: str | None,
    d: DetectionSettings | None,
) -> list[tuple[tuple[int | str, ...], str]]:
    """Problems of ``refs``; the task's checks only when the task is known (``task``)."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    for loc, kind, ref in refs:
        block: Block | None = REGISTRY.get(ref.block)
        if block is None or block.kind != kind:
            valid = [b.name for b in REGISTRY.values() if b.kind == kind]
            guess = nearest(ref.block, valid)
            what = "unknown" if block is None else f"{block.kind} block, not a"
            msg = f"{ref.block!r}: {what} {kind} block"
            if guess:
                msg += f"; did you mean {guess!r}?"
            problems.append(((*loc, "block"), f"{msg} (valid: {', '.join(valid)})"))
            continue
        if task is not None and task not in block.tasks:
            problems.append(
                (
                    (*loc, "block"),
                    f"{ref.block!r} does not support task {task!r} "
                    f"(it supports: {', '.join(block.tasks)})",
                )
            )
        other = next((m for m, names in DETECTION_LOSSES.items() if ref.block in names), None)
        if kind == "loss" and d is not None and other is not None and other != d.mode:
            problems.append(
                (
                    (*loc, "block"),
                    f"{ref.block!r} is a loss of detection mode {other!r}, not {d.mode!r} "
                    f"(task.detection.mode); mode {d.mode!r} takes: "
                    f"{', '.join(DETECTION_LOSSES[d.mode])}",
                )
            )
        try:
            block.params.model_validate(ref.params)
        except ValidationError as exc:
            known = list(block.params.model_fields)
            for err in exc.errors():
                ploc = (*loc, "params", *err["loc"])
                if err["type"] == "extra_forbidden":
                    msg = _unknown_field(ploc, known)
                    msg = msg.replace("unknown field", f"unknown parameter of {ref.block!r}")
                else:
                    msg = _value_problem(err)
                problems.append((ploc, msg))
    return problems


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Validate YAML ``text`` into a Recipe; RecipeError lists every problem by line."""
    root, data = parse_mapping(text, source, "recipe", RecipeError)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            model = _model_at(loc[:-1])
            if err["type"] == "extra_forbidden" and model is not None:
                msg = _unknown_field(loc, list(model.model_fields))
            elif err["type"] == "missing":
                msg = err["msg"]
            else:
                msg = _value_problem(err)
            problems.append(problem_at(root, loc, msg, missing=err["type"] == "missing"))
        problems += [
            problem_at(root, loc, msg) for loc, msg in _check_refs(_raw_refs(data), None, None)
        ]
        problems.sort(key=lambda p: p.line or 0)
        raise RecipeError(source, problems) from None
    block_problems = _check_blocks(recipe)
    if block_problems:
        raise RecipeError(source, [problem_at(root, loc, msg) for loc, msg in block_problems])
    return recipe


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate the recipe file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("recipe file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read recipe: {exc}", path=path) from None
    return parse_recipe(text, str(path))
