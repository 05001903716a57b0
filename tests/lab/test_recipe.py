"""Recipe validation: every problem names its YAML line, the value and the nearest name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recipes import CLS2D, ML2D, REG2D, SEG3D, seg2d
from typer.testing import CliRunner

from medarena.cli.main import app
from medarena.lab import REGISTRY, RecipeError, blocks, parse_recipe
from medarena.lab.blocks import KINDS, Context
from medarena.lab.pipeline import build_model_parts, build_pipelines

runner = CliRunner()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, x in enumerate(text.splitlines(), 1) if needle in x)


def _problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    return [(p.line, p.field, p.message) for p in info.value.problems]


@pytest.mark.parametrize("text", [seg2d(2), SEG3D, CLS2D, ML2D, REG2D])
def test_example_recipes_are_valid_and_build(text: str) -> None:
    recipe = parse_recipe(text)
    pipes = build_pipelines(recipe)
    assert pipes.per_step is not None
    net, loss, make_opt, make_sched = build_model_parts(recipe)
    assert callable(loss)
    sched = make_sched(make_opt(net.parameters()))
    assert sched.get_last_lr()[0] > 0


def test_misspelt_block_points_at_line_and_suggests() -> None:
    text = seg2d(2).replace("block: unet", "block: unnet")
    [(line, field, msg)] = _problems(text)
    assert line == text.splitlines().index("  block: unnet") + 1
    assert field == "network.block"
    assert "'unnet'" in msg and "did you mean 'unet'?" in msg


def test_block_of_the_wrong_kind_or_task() -> None:
    text = seg2d(2).replace("loss: {block: dice_ce}", "loss: {block: adam}")
    [(_, field, msg)] = _problems(text)
    assert field == "loss.block" and "optimizer block, not a loss block" in msg
    text = CLS2D.replace("loss: {block: ce}", "loss: {block: dice}")
    [(_, _, msg)] = _problems(text)
    assert "does not support task 'classification'" in msg


def test_unknown_and_bad_parameters() -> None:
    text = seg2d(2).replace("params: {std: 0.05}", "params: {sdt: 0.05}")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "{sdt: 0.05}") and field == "augment[1].params.sdt"
    assert "did you mean 'std'?" in msg
    text = seg2d(2).replace("params: {lr: 0.01}", "params: {lr: -1}")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "lr: -1") and field == "optimizer.params.lr"
    assert "greater than 0" in msg and "-1" in msg


def test_unknown_field_wrong_type_and_missing_field() -> None:
    text = seg2d(2).replace("batch_size: 2", "batch_sise: 2")
    [(line, field, msg)] = _problems(text)
    assert field == "trainer.batch_sise" and line == _line_of(text, "batch_sise")
    assert "did you mean 'batch_size'?" in msg
    text = seg2d(2).replace("spatial_dims: 2", "spatial_dims: 4")
    [(line, field, msg)] = _problems(text)
    assert (line, field) == (3, "task.spatial_dims") and "4" in msg
    text = "\n".join(x for x in seg2d(2).splitlines() if not x.startswith("loss"))
    [(_, field, msg)] = _problems(text)
    assert field == "loss" and "missing" in msg.lower()


def test_patch_size_must_match_dims_and_targets_are_required() -> None:
    [(_, _, msg)] = _problems(seg2d(2).replace("patch_size: [16, 16]", "patch_size: [16]"))
    assert "needs 2 values" in msg
    [(_, _, msg)] = _problems(CLS2D.replace(", target: bright", ""))
    assert "dataset.target" in msg
    [(_, _, msg)] = _problems(ML2D.replace(", targets: [is_bright, is_big]", ""))
    assert "dataset.targets" in msg
    [(_, field, msg)] = _problems(ML2D.replace("{block: bce}", "{block: ce}"))
    assert field == "loss.block" and "does not support task 'multilabel'" in msg


def test_yaml_syntax_and_duplicate_keys() -> None:
    [(line, _, msg)] = _problems("name: x\ntask: [unclosed\n")
    assert msg.startswith("YAML syntax") and line == 3
    [(line, field, msg)] = _problems(seg2d(2) + "loss: {block: ce}\n")
    assert msg == "duplicate key" and field == "loss" and line == len(seg2d(2).splitlines()) + 1


def test_registry_covers_the_kinds_and_documents_every_parameter() -> None:
    for kind in KINDS:
        assert blocks(kind), kind
    for b in REGISTRY.values():
        for p in b.describe()["params"]:
            assert p["description"], (b.name, p["name"])
    with pytest.raises(Exception, match="did you mean 'network'"):
        blocks("netwrk")


@pytest.mark.parametrize("name", ["unet", "basic_unet", "segresnet", "dynunet"])
def test_segmentation_networks_build_and_keep_the_grid(name: str) -> None:
    import torch

    small = {
        "unet": {"channels": [2, 4], "strides": [2], "num_res_units": 0},
        "basic_unet": {"features": [2, 2, 2, 2, 2, 2]},
        "segresnet": {"init_filters": 2, "num_groups": 1, "blocks_down": [1, 1], "blocks_up": [1]},
        "dynunet": {"filters": [2, 4, 4], "strides": [1, 2, 2]},
    }[name]
    block = REGISTRY[name]
    net = block.build(block.params.model_validate(small), Context("segmentation", 2, 1, 3))
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_cli_blocks_validate(tmp_path: Path) -> None:
    res = runner.invoke(app, ["lab", "blocks", "--kind", "network", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert {b["name"] for b in listed} == {
        "unet",
        "basic_unet",
        "segresnet",
        "dynunet",
        "densenet",
        "resnet",
    }
    unet = next(b for b in listed if b["name"] == "unet")
    assert {"name": "strides", "type": "list[integer]"}.items() <= unet["params"][1].items()
    res = runner.invoke(app, ["lab", "blocks"])
    assert res.exit_code == 0 and "rand_crop_by_label" in res.output
    good = tmp_path / "good.yaml"
    good.write_text(seg2d(2))
    res = runner.invoke(app, ["lab", "validate", "--no-data", str(good)])
    assert res.exit_code == 0 and "ok" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(seg2d(2).replace("block: zscore", "block: zscor"))
    res = runner.invoke(app, ["lab", "validate", "--no-data", str(bad)])
    assert res.exit_code == 2
    assert (
        f"line {_line_of(seg2d(2), 'zscore')}" in res.output
        and "did you mean 'zscore'" in res.output
    )


def test_every_problem_at_once_and_choices_suggested(tmp_path: Path) -> None:
    """A bad trainer value does not hide misspelt block names; a misspelt choice is guessed."""
    text = (
        seg2d(2)
        .replace("batch_size: 2", "batch_size: two")
        .replace("block: zscore", "block: zscor")
        .replace("block: adam", "block: adma")
    )
    problems = _problems(text)
    assert [f for _, f, _ in problems] == [
        "preprocess[0].block",
        "optimizer.block",
        "trainer.batch_size",
    ]
    assert [line for line, _, _ in problems] == sorted(line for line, _, _ in problems)
    assert "did you mean 'zscore'?" in problems[0][2] and "did you mean 'adam'?" in problems[1][2]
    text = SEG3D.replace("pixdim: [1.0, 1.0, 1.0]", "pixdim: [1.0, 1.0, 1.0], mode: bilinar")
    [(line, field, msg)] = _problems(text)
    assert field == "preprocess[1].params.mode" and line == _line_of(text, "bilinar")
    assert "'bilinar'" in msg and "did you mean 'bilinear'?" in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        seg2d(2).replace("batch_size: 2", "batch_size: two").replace("block: adam", "block: adma")
    )
    res = runner.invoke(app, ["lab", "validate", str(bad)])
    assert res.exit_code == 2
    lines = res.output.splitlines()
    assert "invalid recipe, 2 problems" in lines[0]
    assert lines[1].lstrip().startswith("line ") and "did you mean 'adam'?" in lines[1]
    assert "trainer.batch_size" in lines[2] and "'two'" in lines[2]
