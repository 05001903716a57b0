"""From a recipe's blocks to MONAI transform pipelines and the model's training parts.

Two pipelines: ``cached`` (the deterministic preprocessing blocks, applied once per case)
and ``per_step`` (drawn anew for every sample of every step). The per-step pipeline is:
pad to ``trainer.patch_size``, crop a patch (``rand_crop_by_label`` if the recipe lists it,
else a uniformly random patch) for the map tasks (segmentation, detection, image_to_image:
the target map is cropped with the image), then the augmentation blocks in order.
Image-level tasks resize every image to ``trainer.patch_size`` in the cached pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medarena.lab.blocks import MAP_TASKS, REGISTRY, Context
from medarena.lab.recipe import Recipe


def context(recipe: Recipe) -> Context:
    """The builders' context: task, dimensions, channels in and out, epochs.

    Output channels: classes (segmentation, classification), labels (multilabel), one value
    (regression), one heatmap (detection; mode segmentation: background and finding), one
    image (image_to_image).
    """
    t = recipe.task
    mode = t.detection.mode if t.detection is not None else "heatmap"
    one = {"regression": 1, "detection": 2 if mode == "segmentation" else 1, "image_to_image": 1}
    out = {**one, "multilabel": len(recipe.dataset.targets or ())}.get(t.type, t.num_classes)
    tr = recipe.trainer
    return Context(
        t.type, t.spatial_dims, t.in_channels, out, tr.epochs, tuple(tr.patch_size), mode
    )


@dataclass
class Pipelines:
    cached: Any  # monai Compose
    per_step: Any  # monai Compose (Randomizable)


def build_pipelines(recipe: Recipe) -> Pipelines:
    from monai.transforms import Compose, RandSpatialCropd, Resized, SpatialPadd

    ctx = context(recipe)
    patch = list(recipe.trainer.patch_size)
    cached: list[Any] = []
    crop: Any = None
    for ref in recipe.preprocess:
        block = REGISTRY[ref.block]
        built = block.build(recipe.params_of(ref), ctx)
        if block.random:  # the patch cropper: drawn per step, after padding to the patch
            crop = built
        else:
            cached.append(built)
    per_step: list[Any] = []
    if recipe.task.type in MAP_TASKS:
        per_step.append(SpatialPadd(keys=ctx.keys, spatial_size=patch))
        per_step.append(crop or RandSpatialCropd(keys=ctx.keys, roi_size=patch, random_size=False))
    else:
        cached.append(Resized(keys=ctx.keys, spatial_size=patch, mode="area"))
    for ref in recipe.augment:
        per_step.append(REGISTRY[ref.block].build(recipe.params_of(ref), ctx))
    return Pipelines(Compose(cached), Compose(per_step))


def residual_image(net: Any) -> Any:
    """``net`` predicting a correction: output = first input channel + gain * net(input).

    The wrapper of ``task.image_to_image.residual``. ``gain`` is a learnt scalar starting at
    0 (as in ReZero), so an untrained model returns its input unchanged instead of adding
    the random output of a fresh network, and training starts from the identity. Its
    weights are the wrapped net's under the prefix ``net.`` plus ``gain``; it exports to
    ONNX as one graph.
    """
    import torch

    class ResidualImage(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.net = inner
            self.gain = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = x[:, :1] + self.gain * self.net(x)
            return out

    return ResidualImage(net)


def build_model_parts(recipe: Recipe) -> tuple[Any, Any, Any, Any]:
    """(network, loss function, optimizer factory, scheduler factory) from the blocks."""
    ctx = context(recipe)

    def build(ref: Any) -> Any:
        return REGISTRY[ref.block].build(recipe.params_of(ref), ctx)

    net = build(recipe.network)
    i2i = recipe.task.image_to_image
    if i2i is not None and i2i.residual:
        net = residual_image(net)
    return (
        net,
        build(recipe.loss),
        build(recipe.optimizer),
        build(recipe.schedule),
    )
