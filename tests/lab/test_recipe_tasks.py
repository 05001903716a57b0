"""Recipes of the detection and image_to_image tasks: valid ones build, bad fields are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recipes import DET3D, DET3D_SEG, i2i2d
from typer.testing import CliRunner

from medarena.cli.main import app
from medarena.lab import RecipeError, load_recipe, parse_recipe
from medarena.lab.pipeline import build_model_parts, build_pipelines, context

runner = CliRunner()


def _problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    return [(p.line, p.field, p.message) for p in info.value.problems]


def _line_of(text: str, needle: str) -> int:
    return next(i for i, x in enumerate(text.splitlines(), 1) if needle in x)


@pytest.mark.parametrize("text", [DET3D, i2i2d(2)], ids=["detection", "image_to_image"])
def test_recipes_build_one_output_channel(text: str) -> None:
    recipe = parse_recipe(text)
    assert context(recipe).out_channels == 1
    assert build_pipelines(recipe).per_step is not None
    net = build_model_parts(recipe)[0]
    x = torch.zeros(1, 1, *recipe.trainer.patch_size)
    assert net(x).shape == (1, 1, *recipe.trainer.patch_size)
    assert parse_recipe(recipe.to_yaml()) == recipe


def test_residual_image_adds_the_input() -> None:
    recipe = parse_recipe(i2i2d(2))
    net = build_model_parts(recipe)[0]
    plain = build_model_parts(parse_recipe(i2i2d(2).replace(", residual: true", "")))[0]
    weights = net.state_dict()
    assert weights["gain"].item() == 0.0  # untrained: the identity
    plain.load_state_dict({k.removeprefix("net."): v for k, v in weights.items() if k != "gain"})
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), x)
        net.gain.fill_(0.5)
        assert torch.allclose(net(x), x + 0.5 * plain(x))


def test_detection_losses_compare_the_sigmoid_with_the_target() -> None:
    recipe = parse_recipe(DET3D)
    logits = torch.zeros(1, 1, 2, 2, 2)  # sigmoid 0.5 everywhere
    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0, 0, 0] = 1.0
    weighted = build_model_parts(recipe)[1]
    # squared error 0.25 everywhere, the target voxel weighted 1 + 10: (7 * 0.25 + 11 * 0.25) / 8
    assert float(weighted(logits, target)) == pytest.approx(18 * 0.25 / 8)
    mse = build_model_parts(parse_recipe(DET3D.replace("block: weighted_mse", "block: mse")))[1]
    assert float(mse(logits, target)) == pytest.approx(0.25)


def test_detection_defaults_are_filled_in() -> None:
    text = "\n".join(x for x in DET3D.splitlines() if "detection: {" not in x)
    d = parse_recipe(text).task.detection
    assert d is not None
    assert (d.sigma_scale, d.threshold, d.min_distance_mm, d.max_candidates) == (0.5, 0.1, 5.0, 100)
    i2i = parse_recipe("\n".join(x for x in i2i2d(2).splitlines() if "image_to_image: {" not in x))
    assert i2i.task.image_to_image is not None
    assert i2i.task.image_to_image.data_range == "ref_range"
    assert i2i.task.image_to_image.residual is False


def test_bad_detection_fields_name_line_and_value() -> None:
    text = DET3D.replace("min_distance_mm: 4.0", "min_distance: 4.0")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "min_distance")
    assert field == "task.detection.min_distance"
    assert "did you mean 'min_distance_mm'?" in msg
    text = DET3D.replace("threshold: 0.05", "threshold: 1.5")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "threshold")
    assert field == "task.detection.threshold" and "1.5" in msg and "less than or equal" in msg
    text = DET3D.replace("max_candidates: 10", "max_candidates: 0")
    [(_, field, msg)] = _problems(text)
    assert field == "task.detection.max_candidates" and "greater than or equal to 1" in msg


def test_settings_of_another_task_are_refused() -> None:
    text = i2i2d(2).replace("type: image_to_image", "type: detection")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "type: detection") and field == "task"
    assert "task.image_to_image settings need task.type 'image_to_image'" in msg


def test_bad_data_range_is_named() -> None:
    for bad, words in (("-1.0", "must be positive"), ("max", "ref_max")):
        text = i2i2d(2).replace("data_range: 1.0", f"data_range: {bad}")
        problems = _problems(text)
        assert all(line == _line_of(text, "data_range") for line, _, _ in problems)
        assert any(words in msg for _, _, msg in problems), problems


def test_blocks_of_other_tasks_are_refused() -> None:
    [(_, field, msg)] = _problems(DET3D.replace("block: weighted_mse", "block: bce"))
    assert field == "loss.block" and "does not support task 'detection'" in msg
    [(_, field, msg)] = _problems(i2i2d(2).replace("block: l1", "block: weighted_mse"))
    assert "does not support task 'image_to_image'" in msg and "detection" in msg
    text = i2i2d(2).replace(
        "block: unet\n  params: {channels: [8, 16, 32], strides: [2, 2], num_res_units: 1}",
        "block: densenet",
    )
    [(_, field, msg)] = _problems(text)
    assert field == "network.block" and "does not support task 'image_to_image'" in msg


def test_cli_blocks_lists_the_new_tasks() -> None:
    res = runner.invoke(app, ["lab", "blocks", "--json"])
    assert res.exit_code == 0, res.output
    tasks = {b["name"]: b["tasks"] for b in json.loads(res.output)}
    assert {"detection", "image_to_image"} <= set(tasks["unet"])
    assert tasks["weighted_mse"] == ["detection"]
    assert "detection" in tasks["rand_crop_by_label"]
    assert "image_to_image" in tasks["l1"] and "detection" not in tasks["densenet"]
    res = runner.invoke(app, ["lab", "blocks", "--kind", "loss"])
    assert res.exit_code == 0 and "weighted_mse" in res.output and "pos_weight" in res.output


@pytest.mark.parametrize(
    ("name", "task"),
    [("lung-nodules-heatmap.yaml", "detection"), ("lowdose-ct-denoising.yaml", "image_to_image")],
)
def test_example_recipes_are_valid(name: str, task: str) -> None:
    path = Path(__file__).parents[2] / "examples" / "lab" / name
    recipe = load_recipe(path)
    assert recipe.task.type == task
    assert build_model_parts(recipe)[0] is not None


def test_detection_by_segmentation_builds_two_classes_and_nearest_labels() -> None:
    recipe = parse_recipe(DET3D_SEG)
    assert recipe.task.detection is not None and recipe.task.detection.mode == "segmentation"
    ctx = context(recipe)
    assert ctx.out_channels == 2 and ctx.label_target
    assert ctx.modes("bilinear") == ("bilinear", "nearest")  # sphere masks stay labels
    assert context(parse_recipe(DET3D)).modes("bilinear") == ("bilinear", "bilinear")
    net = build_model_parts(recipe)[0]
    assert net(torch.zeros(1, 1, 12, 12, 12)).shape == (1, 2, 12, 12, 12)


def test_a_loss_of_the_other_detection_mode_is_named() -> None:
    text = DET3D.replace("block: weighted_mse", "block: dice_ce")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "dice_ce") and field == "loss.block"
    assert "'dice_ce' is a loss of detection mode 'segmentation', not 'heatmap'" in msg
    assert "mse, l1, weighted_mse" in msg
    [(_, _, msg)] = _problems(DET3D_SEG.replace("block: dice_ce", "block: l1"))
    assert "'l1' is a loss of detection mode 'heatmap', not 'segmentation'" in msg
    [(_, field, msg)] = _problems(
        DET3D.replace("mode: ", "").replace("{sigma", "{mode: box, sigma")
    )
    assert field == "task.detection.mode" and "'heatmap' or 'segmentation'" in msg
