"""Training end to end on tiny generated data: every task type, determinism, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from recipes import CLS2D, ML2D, REG2D, SEG3D, seg2d

from medarena.datasets.catalogue import Catalogue
from medarena.errors import InputError
from medarena.lab import parse_recipe
from medarena.lab.trainer import Progress, train


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    ("text", "metric"),
    [
        (seg2d(2), "dice"),
        (SEG3D, "dice"),
        (CLS2D, "accuracy"),
        (ML2D, "subset_accuracy"),
        (REG2D, "mae"),
    ],
    ids=["seg2d", "seg3d", "classification", "multilabel", "regression"],
)
def test_each_task_trains_validates_and_checkpoints(
    lab_catalogue: Catalogue, tmp_path: Path, text: str, metric: str
) -> None:
    recipe = parse_recipe(text)
    seen: list[Progress] = []
    result = train(recipe, lab_catalogue, tmp_path / "run", progress=seen.append, export=False)
    assert result.epochs_done == recipe.trainer.epochs
    assert result.stopped == "epochs"
    steps_per_epoch = -(-6 // recipe.trainer.batch_size)  # 6 training cases (75 % of 8)
    assert result.steps_done == steps_per_epoch * recipe.trainer.epochs
    assert metric in result.metrics and np.isfinite(result.metrics[metric])
    assert [p.step for p in seen if p.epoch == 1][:steps_per_epoch] == list(
        range(1, steps_per_epoch + 1)
    )
    assert seen[-1].metric == result.metrics[metric]
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert [row["epoch"] for row in curves] == list(range(1, recipe.trainer.epochs + 1))
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert parse_recipe((tmp_path / "run" / "recipe.yaml").read_text()) == recipe


def test_segmentation_learns_the_disks(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    # validation Dice comes from the evaluation engine; a trained net must beat chance
    result = train(parse_recipe(seg2d(4)), lab_catalogue, tmp_path / "run", export=False)
    assert result.metrics["dice"] > 0.6
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_same_seed_same_weights_other_seed_other_weights(
    lab_catalogue: Catalogue, tmp_path: Path
) -> None:
    recipe = parse_recipe(seg2d(2))
    train(recipe, lab_catalogue, tmp_path / "a", export=False)
    train(recipe, lab_catalogue, tmp_path / "b", export=False)
    other = parse_recipe(seg2d(2).replace("seed: 1", "seed: 2"))
    train(other, lab_catalogue, tmp_path / "c", export=False)
    a, b, c = (_weights(tmp_path / x / "model.pt") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_time_budget_stops_early(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    text = seg2d(1000).replace("seed: 1}", "seed: 1, time_budget_s: 1.0}")
    result = train(parse_recipe(text), lab_catalogue, tmp_path / "run", export=False)
    assert result.stopped == "time_budget"
    assert 1 <= result.epochs_done < 1000
    assert result.history[-1]["stopped"] == "time_budget"
    assert "dice" in result.metrics  # validated at the stop


def test_onnx_export_matches_pytorch(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    result = train(parse_recipe(CLS2D), lab_catalogue, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "export.json").read_text())
    assert info == result.export
    assert info["parity_ok"] and info["max_abs_diff"] <= info["tolerance"] == 1e-4
    assert info["input_shape"] == ["batch", 1, 24, 24]
    onnx_file = tmp_path / "run" / "model.onnx"
    assert not list((tmp_path / "run").glob("*.data"))  # a single file
    # dynamic batch: 5 inputs through ONNX Runtime equal 5 through the restored PyTorch net
    from medarena.lab.pipeline import build_model_parts

    net = build_model_parts(parse_recipe(CLS2D))[0]
    net.load_state_dict(_weights(tmp_path / "run" / "model.pt"))
    net.eval()
    x = np.random.default_rng(0).normal(size=(5, 1, 24, 24)).astype(np.float32)
    got = ort.InferenceSession(str(onnx_file)).run(None, {"input": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 2)
    assert np.max(np.abs(got - want)) <= 1e-4


def test_segmentation_onnx_parity_3d(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    text = SEG3D.replace("epochs: 2", "epochs: 1")
    result = train(parse_recipe(text), lab_catalogue, tmp_path / "run")
    assert result.export is not None
    assert result.export["output_shape"] == ["batch", 2, 16, 16, 16]
    assert result.export["parity_cases"] == 2
    assert result.export["max_abs_diff"] <= result.export["tolerance"]


def test_checkpoint_of_another_recipe_is_refused(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    train(parse_recipe(seg2d(1)), lab_catalogue, tmp_path / "run", export=False)
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(InputError, match="checkpoint of a different recipe"):
        train(parse_recipe(seg2d(2)), lab_catalogue, tmp_path / "run", export=False)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_missing_split_and_target_are_named(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no split 'nope'"):
        train(
            parse_recipe(seg2d(1).replace("split: default", "split: nope")),
            lab_catalogue,
            tmp_path / "a",
        )
    with pytest.raises(InputError, match="no label 'grade'"):
        train(
            parse_recipe(CLS2D.replace("target: bright", "target: grade")),
            lab_catalogue,
            tmp_path / "b",
        )


def test_finished_run_is_reported_not_retrained(lab_catalogue: Catalogue, tmp_path: Path) -> None:
    recipe = parse_recipe(seg2d(1))
    first = train(recipe, lab_catalogue, tmp_path / "run", export=False)
    weights = (tmp_path / "run" / "model.pt").read_bytes()
    again = train(recipe, lab_catalogue, tmp_path / "run", export=False)
    assert again.model == first.model and again.history == first.history
    assert again.metrics == first.metrics
    assert (tmp_path / "run" / "model.pt").read_bytes() == weights
