"""ONNX export of a trained network, checked against PyTorch with ONNX Runtime.

The model is written as a single ``.onnx`` file (weights inside, no external data) with a
dynamic batch axis named ``batch``; spatial axes are fixed to ``trainer.patch_size`` (a
segmentation model is run by sliding windows of that size). The legacy TorchScript exporter
(``dynamo=False``) is used: the dynamo exporter would need the onnxscript package and writes
the weights to a second file. After export both runtimes predict the validation cases (as
one batch, so the dynamic axis is exercised); the largest absolute difference and the
tolerance it was held to are returned and recorded in ``export.json``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medarena.errors import MedarenaError

if TYPE_CHECKING:
    from medarena.lab.trainer import _Run


class ParityError(MedarenaError):
    """ONNX Runtime and PyTorch disagree by more than the recipe's tolerance."""


def _parity_inputs(run: _Run) -> np.ndarray:
    from monai.transforms import ResizeWithPadOrCrop

    fit = ResizeWithPadOrCrop(spatial_size=list(run.recipe.trainer.patch_size))
    arrays = [np.asarray(fit(c["image"].as_tensor()), dtype=np.float32) for c in run.val_cases]
    return np.stack(arrays)


def export_onnx(run: _Run, path: Path) -> dict[str, Any]:
    """Write ``run``'s network to ``path`` and compare ONNX Runtime with PyTorch."""
    import onnx
    import onnxruntime as ort
    import torch

    recipe = run.recipe
    model = copy.deepcopy(run.model).cpu().eval()
    x = _parity_inputs(run)
    dummy = torch.from_numpy(x[:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=recipe.export.opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(tmp))
    tmp.replace(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["output"], {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ParityError(f"ONNX output shape {got.shape} differs from PyTorch {want.shape}")
    max_abs = float(np.max(np.abs(got - want)))
    info = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "opset": recipe.export.opset,
        "input_shape": ["batch", *x.shape[1:]],
        "output_shape": ["batch", *want.shape[1:]],
        "parity_cases": int(x.shape[0]),
        "max_abs_diff": max_abs,
        "tolerance": recipe.export.tolerance,
        "parity_ok": bool(max_abs <= recipe.export.tolerance),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
    if not info["parity_ok"]:
        raise ParityError(
            f"ONNX Runtime differs from PyTorch by {max_abs:.3g} on {x.shape[0]} validation "
            f"cases, above the tolerance {recipe.export.tolerance:g} (export.tolerance)"
        )
    return info
