"""Explanations of a model's output on one case: Grad-CAM, occlusion, probability maps.

Three methods, one per kind of model, each giving maps in [0, 1] on the network's input grid:

- **Grad-CAM** (:func:`grad_cam`, MONAI's :class:`monai.visualize.GradCAM`) for PyTorch
  classifiers and regressors, such as the lab's DenseNet and ResNet blocks. It needs the
  network's gradients, so it runs on the stored PyTorch weights (a lab registry model).
  The target layer is chosen by :func:`default_target_layer`: the last layer, in the
  order the forward pass runs them, whose output is still a feature map (batch, channels,
  and spatial axes larger than one voxel somewhere). For MONAI's DenseNet that is
  ``class_layers.relu``, for its ResNet the last block's ``relu``. Pass ``target_layer`` to
  choose another one (any name of ``model.named_modules()``).
- **Occlusion sensitivity** (:func:`occlusion_map`, MONAI's
  :class:`monai.visualize.OcclusionSensitivity`) for classifiers known only as ONNX graphs:
  ONNX Runtime computes no gradients, so a patch of the image is blurred at a time and the
  drop of the class's output is the patch's importance. Forward passes only; coarser than
  Grad-CAM (the patch is a quarter of each axis) and labelled "occlusion" wherever shown.
  Converting foreign ONNX graphs to PyTorch (onnx2torch) was not chosen: it supports a
  subset of operators and would run the participant's graph as new PyTorch code.
- **Probability maps** (:func:`probability_maps`) for segmentation: the softmax over the
  output channels (one map per foreground class, channel 0 being the background) or the
  sigmoid of a single output channel. Their argmax is the predicted label map.

Every map is normalised so its largest value is 1 (Grad-CAM and occlusion; a map without
any positive evidence stays 0), or is a probability already.
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medarena.errors import InputError, NotFoundError

Method = Literal["gradcam", "occlusion", "probability"]
METHOD_TITLES: dict[str, str] = {
    "gradcam": "Grad-CAM (MONAI, gradients of the PyTorch model)",
    "occlusion": "Occlusion sensitivity (MONAI, forward passes of the ONNX model; not Grad-CAM)",
    "probability": "Probability map (the model's softmax / sigmoid output)",
}


@dataclass(frozen=True)
class Explanation:
    """Maps of one case: ``maps[i]`` (spatial axes only, values in [0, 1]) is for ``names[i]``."""

    method: Method
    names: tuple[str, ...]
    maps: np.ndarray  # (n, *spatial), float32
    labels: np.ndarray | None = None  # segmentation: the predicted label map (uint8)


def default_target_layer(model: Any, x: Any) -> str:
    """The Grad-CAM layer of ``model`` for inputs like ``x`` (see the module doc).

    Runs one forward pass with hooks on every leaf module and keeps the last one whose
    output is a feature map of the input's rank; one with a spatial axis above 1 voxel
    is preferred. InputError when there is none (a network without convolutions).
    """
    import torch

    model.eval()  # batch norm on one case needs the running statistics
    order: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
                if isinstance(out, torch.Tensor):
                    order.append((name, tuple(out.shape)))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    maps = [(n, s) for n, s in order if len(s) == x.ndim]
    if not maps:
        raise InputError(
            "the network has no layer whose output is a feature map (batch, channels, "
            "spatial axes); Grad-CAM needs one",
            path="target_layer",
        )
    wide = [n for n, s in maps if max(s[2:]) > 1]
    return wide[-1] if wide else maps[-1][0]


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    m = np.clip(m, 0.0, None)
    top = float(m.max()) if m.size else 0.0
    return (m / top).astype(np.float32) if top > 0 else np.zeros_like(m)


def grad_cam(
    model: Any,
    x: Any,
    class_index: int | None = None,
    target_layer: str | None = None,
) -> tuple[np.ndarray, int, str]:
    """Grad-CAM of one input ``x`` (1, C, *spatial) for ``class_index`` (default: the
    highest output): (map on x's grid in [0, 1], the class explained, the layer used).

    The map is MONAI's (ReLU of the gradient-weighted feature maps), upsampled to the
    input grid, then divided by its maximum. MONAI's default post-processing is not used:
    it maps (min, max) to (1, 0), flipping the map, and would stretch a flat map to a hot
    spot at random; here a map without positive evidence stays 0.
    """
    import torch
    from monai.visualize import GradCAM

    if x.ndim < 3 or x.shape[0] != 1:
        raise InputError(
            f"Grad-CAM explains one case: input shape {list(x.shape)} must be "
            "(1, channels, spatial axes)",
            path="x",
        )
    model = model.eval()
    layer = target_layer or default_target_layer(model, x)
    names = dict(model.named_modules())
    if layer not in names:
        raise InputError(
            f"no layer {layer!r} in the network; layers: {', '.join(list(names)[1:8])}, ...",
            path="target_layer",
            value=layer,
        )
    with torch.no_grad():
        logits = model(x)
    index = int(logits.reshape(-1).argmax()) if class_index is None else int(class_index)
    if not 0 <= index < logits.shape[-1]:
        raise InputError(
            f"class index must be between 0 and {logits.shape[-1] - 1}",
            path="class_index",
            value=class_index,
        )
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=lambda t: t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that the input needs no gradient
        out = cam(x.detach().clone(), class_idx=index)
    heat = out[0, 0].detach().cpu().numpy()
    return _normalise(heat), index, layer


def occlusion_map(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    class_index: int,
    *,
    activation: Literal["none", "softmax", "sigmoid"] = "none",
    fraction: float = 0.25,
    n_batch: int = 1,
) -> np.ndarray:
    """Occlusion sensitivity of ``class_index`` for input ``x`` (1, C, *spatial), with
    ``predict`` a forward pass on a numpy batch (e.g. ONNX Runtime): a map in [0, 1].

    MONAI's OcclusionSensitivity blurs a patch of ``fraction`` of each axis (gaussian
    mode, half overlap); a voxel's importance is how much the (activated) output of the
    class drops when the patches over it are blurred.
    """
    return occlusion_maps(
        predict, x, [class_index], activation=activation, fraction=fraction, n_batch=n_batch
    )[0]


def occlusion_maps(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    class_indices: Sequence[int],
    *,
    activation: Literal["none", "softmax", "sigmoid"] = "none",
    fraction: float = 0.25,
    n_batch: int = 1,
) -> np.ndarray:
    """:func:`occlusion_map` of several outputs from one set of occluded forward passes
    (n, *spatial): a multilabel model costs no more passes than a classifier."""
    import torch
    from monai.visualize import OcclusionSensitivity

    class _Forward(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(predict(t.detach().cpu().numpy()), np.float32))

    spatial = x.shape[2:]
    mask = [max(1, round(n * fraction)) for n in spatial]
    # explicit callables: MONAI's activate=True picks sigmoid or softmax by the number of
    # *input* channels, which would put a sigmoid on a one-channel image's class scores
    activate: bool | Callable[[torch.Tensor], torch.Tensor] = False
    if activation == "softmax":
        activate = _softmax
    elif activation == "sigmoid":
        activate = torch.sigmoid
    occ = OcclusionSensitivity(
        _Forward(), mask_size=mask, n_batch=n_batch, verbose=False, overlap=0.5, activate=activate
    )
    t = torch.from_numpy(np.asarray(x, np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI 1.6's list indexing deprecation notices
        base = _Forward()(t)
        if activation == "softmax":
            base = torch.softmax(base, dim=1)
        elif activation == "sigmoid":
            base = torch.sigmoid(base)
        occ_map, _ = occ(t)
    # MONAI's map is (batch, classes, *spatial): the output with the region around blurred
    flat = base.reshape(1, -1)[0]
    return np.stack([_normalise(flat[i].item() - occ_map[0, i].numpy()) for i in class_indices])


def _softmax(t: Any) -> Any:
    return t.softmax(1)


def probability_maps(
    logits: np.ndarray, mode: Literal["softmax", "sigmoid", "identity"]
) -> np.ndarray:
    """Foreground probability maps of segmentation logits (C, *spatial).

    ``softmax``: over the C channels, channel 0 the background: maps of channels 1..C-1.
    ``sigmoid``: each channel's sigmoid. ``identity``: the outputs clipped to [0, 1] (a
    model that outputs probabilities itself).
    """
    v = np.asarray(logits, dtype=np.float64)
    if mode == "softmax":
        if v.shape[0] < 2:
            raise InputError(
                f"a softmax needs at least 2 channels, got {v.shape[0]}", path="outputs"
            )
        e = np.exp(v - v.max(axis=0, keepdims=True))
        p = e / e.sum(axis=0, keepdims=True)
        return p[1:].astype(np.float32)
    if mode == "sigmoid":
        return (1.0 / (1.0 + np.exp(-v))).astype(np.float32)
    return np.clip(np.nan_to_num(v), 0.0, 1.0).astype(np.float32)


def resize_map(m: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A map (spatial axes only) resized to ``shape`` (linear interpolation)."""
    import torch
    import torch.nn.functional as F

    if tuple(m.shape) == tuple(shape):
        return np.asarray(m, np.float32)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    t = torch.from_numpy(np.asarray(m, np.float32))[None, None]
    out = F.interpolate(t, size=tuple(int(n) for n in shape), mode=mode, align_corners=False)
    return np.clip(out[0, 0].numpy(), 0.0, 1.0)


def registry_network(store: Any, recipe_yaml: str, weights_digest: str) -> Any:
    """The PyTorch network of a lab registry model: built from its recipe's network
    block, with the stored weights (``model.pt``) loaded, in eval mode."""
    import torch

    from medarena.lab.pipeline import build_model_parts
    from medarena.lab.recipe import parse_recipe

    recipe = parse_recipe(recipe_yaml, "recipe.yaml")
    network = build_model_parts(recipe)[0]
    state = torch.load(
        io.BytesIO(store.get_bytes(weights_digest)), map_location="cpu", weights_only=True
    )
    network.load_state_dict(state)
    return network.eval()


def case_image(store: Any, case: Any, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """A case's image channels (channel-first, by object name) and the NIfTI affine."""
    from medarena.imaging.nifti import read_nifti

    objs = sorted((o for o in case.objects if o.role == "image"), key=lambda o: o.name)
    if not objs:
        raise NotFoundError(f"case {case.case_key!r} has no image object")
    channels, affine = [], None
    for o in objs:
        img = read_nifti(store.path_of(o.digest))
        arr = img.array.astype(np.float32)
        channels.append(arr[None] if arr.ndim == ndim else np.moveaxis(arr, -1, 0))
        affine = img.nifti_affine() if affine is None else affine
    assert affine is not None
    return np.concatenate(channels, axis=0), affine


def maps_nifti(maps: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped uint8 NIfTI of maps (n, *spatial) in [0, 1]: (x, y, z, n), scl_slope 1/255."""
    import nibabel as nib

    arr = np.moveaxis(np.clip(maps, 0.0, 1.0), 0, -1)
    if arr.ndim == 3:  # 2-D maps: one slice
        arr = arr[:, :, None, :]
    img = nib.Nifti1Image(np.rint(arr * 255.0).astype(np.uint8), affine)
    img.header.set_slope_inter(1.0 / 255.0, 0.0)
    return gzip.compress(img.to_bytes(), mtime=0)


def explain_registry_case(
    cat: Any,
    ref: str,
    case_key: str,
    *,
    dataset: str | None = None,
    target_layer: str | None = None,
    class_index: int | None = None,
) -> tuple[Explanation, np.ndarray]:
    """The explanation of a registry model on one case: (maps, the maps' NIfTI affine).

    The case (of ``dataset``, default the model's own) goes through the recipe's
    deterministic preprocessing; the maps are on that preprocessed grid, and the affine
    MONAI tracked through the transforms places them in the case's world coordinates.
    Classifiers and regressors get Grad-CAM (``class_index``: default the highest output
    for classification, every label for multilabel, the value for regression);
    segmentation models get probability maps (sliding windows as in validation). A case
    of a hidden subset is refused: hidden test data is not for explaining.
    """
    import torch
    from monai.data import MetaTensor
    from sqlalchemy import select

    from medarena.db.models import Case, Dataset, SplitAssignment
    from medarena.lab.blocks import MAP_TASKS
    from medarena.lab.pipeline import build_pipelines
    from medarena.lab.recipe import parse_recipe
    from medarena.lab.registry import get_model

    info = get_model(cat, ref)
    recipe = parse_recipe(info.recipe_yaml, f"{info.ref}/recipe.yaml")
    task = recipe.task.type
    if task not in ("classification", "multilabel", "regression", "segmentation"):
        raise InputError(
            f"model {info.ref} is a {task} model; explanations cover classification, "
            "multilabel, regression (Grad-CAM) and segmentation (probability maps)",
            value=ref,
        )
    name = dataset or info.dataset
    with cat.session() as s:
        case = s.scalars(
            select(Case).join(Dataset).where(Dataset.name == name, Case.case_key == case_key)
        ).one_or_none()
        if case is None:
            raise NotFoundError(f"no case {case_key!r} in dataset {name!r}")
        hidden = s.scalars(
            select(SplitAssignment.id).where(
                SplitAssignment.case_id == case.id, SplitAssignment.hidden.is_(True)
            )
        ).first()
        if hidden is not None:
            raise InputError(
                f"case {case_key!r} is in a hidden subset of dataset {name!r}; hidden test "
                "cases are not explained",
                value=case_key,
            )
        image, affine = case_image(cat.store, case, recipe.task.spatial_dims)
    if image.shape[0] != recipe.task.in_channels:
        raise InputError(
            f"case {case_key!r} has {image.shape[0]} image channel(s); model {info.ref} "
            f"takes {recipe.task.in_channels}",
            value=case_key,
        )
    aff = torch.as_tensor(affine, dtype=torch.float64)
    d: dict[str, Any] = {"image": MetaTensor(torch.from_numpy(image), affine=aff)}
    if task in MAP_TASKS:  # the label key the spatial blocks also move: an empty map
        d["label"] = MetaTensor(torch.zeros((1, *image.shape[1:])), affine=aff)
    d = build_pipelines(recipe).cached(d)
    x_meta = d["image"]
    x = torch.as_tensor(np.asarray(x_meta), dtype=torch.float32)[None]
    out_affine = np.asarray(x_meta.affine, dtype=np.float64)
    network = registry_network(cat.store, info.recipe_yaml, info.weights_digest)
    classes = [str(c) for c in info.model_card.get("training_data", {}).get("class_names", [])]
    if task == "segmentation":
        maps = _segmentation_probabilities(network, x, recipe)
        fg = classes[1:] if len(classes) == maps.shape[0] + 1 else []
        seg_names = tuple(fg or (str(i) for i in range(1, maps.shape[0] + 1)))
        return Explanation("probability", seg_names, maps), out_affine
    with torch.no_grad():
        n_out = int(network(x).shape[-1])
    if class_index is not None:
        targets = [class_index]
    elif task == "classification":
        with torch.no_grad():
            targets = [int(network(x).reshape(-1).argmax())]
    elif task == "multilabel":
        targets = list(range(n_out))
    else:
        targets = [0]
    heat = [grad_cam(network, x, t, target_layer)[0] for t in targets]
    if task == "multilabel":
        labels = list(recipe.dataset.targets or [])
    elif task == "regression":
        labels = [recipe.dataset.target or "value"]
    else:
        labels = classes
    names = tuple(labels[t] if t < len(labels) else str(t) for t in targets)
    return Explanation("gradcam", names, np.stack(heat)), out_affine


def _segmentation_probabilities(network: Any, x: Any, recipe: Any) -> np.ndarray:
    import torch
    from monai.inferers import sliding_window_inference

    sw = recipe.trainer.sliding_window
    with torch.no_grad():
        out = sliding_window_inference(
            x,
            roi_size=list(recipe.trainer.patch_size),
            sw_batch_size=1,
            predictor=network,
            overlap=sw.overlap if sw is not None else 0.25,
            mode=sw.mode if sw is not None else "gaussian",
        )
    logits = np.asarray(out[0] if isinstance(out, torch.Tensor) else out, dtype=np.float32)
    return probability_maps(logits, "softmax" if logits.shape[0] > 1 else "sigmoid")
