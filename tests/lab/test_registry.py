"""The model registry on SQLite and PostgreSQL: versions, card, curves, ONNX in the store."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest
from labdata import write_dataset
from recipes import CLS2D
from typer.testing import CliRunner

from medarena.cli.main import app
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.errors import NotFoundError
from medarena.lab import parse_recipe
from medarena.lab.registry import compare_models, get_model, list_models
from medarena.lab.trainer import train

runner = CliRunner()


@pytest.fixture
def disks(db_url: str, tmp_path: Path) -> Iterator[Catalogue]:
    data = tmp_path / "data"
    cat = open_catalogue(get_settings(data_dir=data, database_url=db_url, secret_key="s" * 48))
    write_dataset(tmp_path / "src", 2, 32)
    ingest(cat, tmp_path / "src", "disks2d")
    make_split(cat, "disks2d", SplitSpec(subsets=("train", "validation"), ratios=(0.75, 0.25)))
    yield cat
    cat.close()


def test_trained_models_are_registered_with_card_curves_and_onnx(
    disks: Catalogue, tmp_path: Path
) -> None:
    recipe = parse_recipe(CLS2D.replace("epochs: 2", "epochs: 1"))
    first = train(recipe, disks, tmp_path / "run1")
    second = train(recipe, disks, tmp_path / "run2", export=False)
    assert (first.model, second.model) == ("disks-resnet:1", "disks-resnet:2")

    listed = list_models(disks)
    assert [m.ref for m in listed] == ["disks-resnet:1", "disks-resnet:2"]
    assert listed[0].dataset_version == listed[1].dataset_version  # same cases, same split

    latest = get_model(disks, "disks-resnet")
    assert latest.version == 2 and latest.onnx_digest is None

    m = get_model(disks, "disks-resnet:1")
    assert parse_recipe(m.recipe_yaml) == recipe
    assert m.task == "classification" and (m.dataset, m.split) == ("disks2d", "default")
    assert m.metrics.keys() == {"accuracy", "auc", "f1_macro"}
    for k, v in first.metrics.items():  # NaN (undefined AUC) survives both backends
        assert (math.isnan(v) and math.isnan(m.metrics[k])) or v == m.metrics[k]
    assert [row["epoch"] for row in m.curves] == [1]
    card = m.model_card
    assert set(card) == {"intended_use", "training_data", "metrics", "limitations", "export"}
    assert card["training_data"]["train_cases"] == 6
    assert card["training_data"]["class_names"] == ["high", "low"]
    assert any("not for clinical" in x for x in card["limitations"])
    # per-subgroup validation accuracy from the evaluation engine's subgroup analysis
    subgroups = {a["attribute"]: a for a in card["metrics"]["subgroups"]}
    assert set(subgroups) == {"sex", "age_band", "site"}
    for a in subgroups.values():
        assert a["metric"] == "correct"
        assert sum(g["n"] for g in a["groups"]) == 2  # the 2 validation cases
        assert all(0.0 <= g["mean"] <= 1.0 for g in a["groups"])
    # the ONNX file in the store is the exported one and runs
    onnx_bytes = disks.store.get_bytes(m.onnx_digest or "")
    assert onnx_bytes == (tmp_path / "run1" / "model.onnx").read_bytes()
    assert m.onnx_size == len(onnx_bytes)
    assert m.export["max_abs_diff"] <= m.export["tolerance"]
    ort.InferenceSession(onnx_bytes)

    cmp = compare_models(disks, ["disks-resnet:1", "disks-resnet:2"])
    assert cmp["same_data"] and cmp["models"] == ["disks-resnet:1", "disks-resnet:2"]
    assert cmp["metrics"]["accuracy"] == [m.metrics["accuracy"], latest.metrics["accuracy"]]
    with pytest.raises(NotFoundError, match="registered models: disks-resnet"):
        get_model(disks, "nope")
    with pytest.raises(NotFoundError):
        get_model(disks, "disks-resnet:7")


def test_cli_models_list_and_show(
    lab_catalogue: Catalogue, lab_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDARENA_DATA_DIR", str(lab_data_dir))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLS2D.replace("epochs: 2", "epochs: 1"))
    res = runner.invoke(app, ["lab", "train", str(recipe), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "registered as model disks-resnet:1" in res.output
    # not a terminal: a line per epoch for the log, besides the bar's last state
    assert re.search(
        r"^epoch 1/1 done: loss [0-9.]+, validation accuracy [0-9.]+$", res.output, re.M
    )
    res = runner.invoke(app, ["lab", "models", "list", "--json"])
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.stdout)
    assert row["model"] == "disks-resnet:1" and row["onnx"] is True
    out = tmp_path / "downloaded.onnx"
    res = runner.invoke(app, ["lab", "models", "show", "disks-resnet:1", "--onnx-out", str(out)])
    assert res.exit_code == 0, res.output
    assert "limitations:" in res.output and "max |onnxruntime - torch|" in res.output
    assert out.read_bytes() == (tmp_path / "run" / "model.onnx").read_bytes()
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    subgroups = card["metrics"]["subgroups"]
    assert subgroups and "validation metric per subgroup" in res.output
    shown = [" ".join(line.replace("│", " ").split()) for line in res.output.splitlines()]
    for analysis in subgroups:  # a row per group: attribute, group, n, metric
        for g in analysis["groups"]:
            row = f"{analysis['attribute']} {g['value']} {g['n']} {analysis['metric']}"
            assert any(line.startswith(row) for line in shown), (row, res.output)
    weights = tmp_path / "model.pt"
    res = runner.invoke(
        app, ["lab", "models", "show", "disks-resnet", "--weights-out", str(weights)]
    )
    assert res.exit_code == 0, res.output
    assert weights.read_bytes() == (tmp_path / "run" / "model.pt").read_bytes()
    res = runner.invoke(app, ["lab", "models", "compare", "disks-resnet:1", "disks-resnet:1"])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "note:" not in res.output
    res = runner.invoke(app, ["lab", "models", "compare", "disks-resnet:1"])
    assert res.exit_code == 2 and "at least two models" in res.output
    res = runner.invoke(app, ["lab", "models", "show", "nope"])
    assert res.exit_code == 2 and "no model 'nope'" in res.output


def test_cli_validate_checks_the_data_in_the_catalogue(
    lab_catalogue: Catalogue, lab_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lab validate` checks the dataset part against the catalogue (--no-data skips it)."""
    monkeypatch.setenv("MEDARENA_DATA_DIR", str(lab_data_dir))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLS2D)
    res = runner.invoke(app, ["lab", "validate", str(recipe)])
    assert res.exit_code == 0 and "ok" in res.output, res.output
    recipe.write_text(CLS2D.replace("{name: disks2d,", "{name: disk2d,"))
    res = runner.invoke(app, ["lab", "validate", str(recipe)])
    assert res.exit_code == 2
    assert "line 2, field dataset.name" in res.output and "did you mean 'disks2d'?" in res.output
    recipe.write_text(CLS2D.replace("num_classes: 2}", "num_classes: 2, in_channels: 3}"))
    res = runner.invoke(app, ["lab", "validate", str(recipe)])
    assert res.exit_code == 2 and "line 3, field task.in_channels" in res.output, res.output
    res = runner.invoke(app, ["lab", "validate", "--no-data", str(recipe)])
    assert res.exit_code == 0, res.output
