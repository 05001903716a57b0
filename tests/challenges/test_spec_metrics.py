"""A track's metric names must be names its task emits with its task_config."""

from __future__ import annotations

import pytest

from medarena.challenges.metric_names import emitted_metric_names, nearest
from medarena.challenges.spec import SpecError, parse_spec

TRACK = """\
slug: c
title: C
rules: Be fair.
tracks:
  - slug: t
    title: T
    task: {task}
    task_config: {config}
    metrics: {metrics}
    primary_metric: {primary}
    dataset: d
    split: s
phases:
  - slug: p
    title: P
    opens: 2020-01-01T00:00:00Z
    closes: 2099-01-01T00:00:00Z
"""


def _spec(task: str, config: str, metrics: str, primary: str) -> str:
    return TRACK.format(task=task, config=config, metrics=metrics, primary=primary)


def test_swapped_structure_and_metric_names_the_line_and_the_fix() -> None:
    text = _spec("segmentation", "{labels: {tumour: 1}, metrics: [dice]}", "[]", "dice/tumour")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "s.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (10, "tracks[0].primary_metric")
    assert "'dice/tumour'" in problem.message and "did you mean 'tumour/dice'" in problem.message


def test_a_bad_item_of_metrics_is_named_with_its_own_line() -> None:
    text = _spec(
        "segmentation",
        "{regions: {WT: [1, 2], TC: [2]}, metrics: [dice, hd95]}",
        "\n      - WT/dice\n      - TC/hd59",
        "WT/dice",
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text, "s.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (11, "tracks[0].metrics[1]")
    assert "'TC/hd59'" in problem.message and "did you mean 'TC/hd95'" in problem.message


def test_names_follow_the_task_config() -> None:
    # binary masks (no labels/regions): plain names; brats: WT/TC/ET regions
    assert parse_spec(_spec("segmentation", "{metrics: [dice]}", "[]", "dice")).tracks
    with pytest.raises(SpecError, match="did you mean 'dice'"):
        parse_spec(_spec("segmentation", "{metrics: [dice]}", "[]", "tumour/dice"))
    brats = "{labels: '2021', lesion_wise: false}"
    assert parse_spec(_spec("brats", brats, "[WT/dice, ET/hd95]", "ET/dice")).tracks
    with pytest.raises(SpecError, match="emits no metric 'ET/lesion_dice'"):
        parse_spec(_spec("brats", brats, "[]", "ET/lesion_dice"))
    assert parse_spec(_spec("brats", "{}", "[]", "ET/lesion_dice")).tracks


def test_dataset_level_names_of_table_tasks_are_valid() -> None:
    assert parse_spec(_spec("classification", "{}", "[accuracy]", "auc")).tracks
    multi = "{mode: multiclass, class_names: [benign, malignant, other]}"
    assert parse_spec(_spec("classification", multi, "[auc/malignant]", "qwk")).tracks
    with pytest.raises(SpecError, match="'auc/cancer'"):
        parse_spec(_spec("classification", multi, "[auc/cancer]", "qwk"))
    # class names taken from the prediction file: any per-class AUC name is possible
    assert parse_spec(_spec("classification", "{mode: multiclass}", "[auc/x]", "auc")).tracks
    assert parse_spec(_spec("regression", "{value_column: age}", "[mae]", "abs_error")).tracks
    with pytest.raises(SpecError, match="did you mean 'abs_error'"):
        parse_spec(_spec("regression", "{value_column: age}", "[]", "abs_eror"))


def test_emitted_names_come_from_the_engine() -> None:
    names = emitted_metric_names("segmentation", {"labels": {"liver": 1, "tumour": 2}})
    assert names is not None
    assert {"liver/dice", "tumour/dice", "liver/nsd", "tumour/hd95"} <= set(names)
    assert not any(n.startswith("dice") for n in names)
    assert nearest("hd95/liver", names) == "liver/hd95"
