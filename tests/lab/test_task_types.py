"""Detection (heatmaps) and image-to-image end to end on tiny generated data.

Each run trains a few steps, validates with the evaluation engine (LUNA16 CPM / PSNR,
SSIM, MAE), exports to ONNX (parity with PyTorch checked) and registers the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from labdata import write_denoising_dataset, write_detection_dataset
from recipes import DET2D, DET3D, DET3D_SEG, i2i2d

from medarena.datasets.catalogue import Catalogue, make_split
from medarena.datasets.findings import attach_findings
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.errors import InputError
from medarena.evaluation.detection import luna16_cpm
from medarena.evaluation.image import psnr
from medarena.lab import parse_recipe
from medarena.lab.detection import component_candidates, heatmap_candidates
from medarena.lab.registry import get_model
from medarena.lab.trainer import _Run, train

SPLIT = SplitSpec(subsets=("train", "validation"), ratios=(0.75, 0.25), group_by=None)


@pytest.fixture(scope="module")
def task_catalogue(lab_catalogue: Catalogue, lab_data_dir: Path) -> Iterator[Catalogue]:
    """lab_catalogue plus ``nodules3d``, ``nodules2d`` (with findings) and ``denoise2d``."""
    src = lab_data_dir.parent / "src-nodules3d"
    write_detection_dataset(src)
    assert ingest(lab_catalogue, src, "nodules3d").cases_added == 8
    found = src.with_name("src-nodules3d-findings")
    summary = attach_findings(
        lab_catalogue,
        "nodules3d",
        found / "annotations.csv",
        found / "annotations_excluded.csv",
    )
    assert (summary.cases, summary.nodules, summary.excluded) == (8, 12, 1)
    make_split(lab_catalogue, "nodules3d", SPLIT)
    src = lab_data_dir.parent / "src-nodules2d"
    write_detection_dataset(src, size=24, ndim=2)
    assert ingest(lab_catalogue, src, "nodules2d").cases_added == 8
    found = src.with_name("src-nodules2d-findings")
    attach_findings(
        lab_catalogue,
        "nodules2d",
        found / "annotations.csv",
        found / "annotations_excluded.csv",
    )
    make_split(lab_catalogue, "nodules2d", SPLIT)
    src = lab_data_dir.parent / "src-denoise2d"
    write_denoising_dataset(src)
    assert ingest(lab_catalogue, src, "denoise2d").cases_added == 8
    make_split(lab_catalogue, "denoise2d", SPLIT)
    yield lab_catalogue


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_detection_trains_validates_exports_and_registers(
    task_catalogue: Catalogue, tmp_path: Path
) -> None:
    recipe = parse_recipe(DET3D)
    result = train(recipe, task_catalogue, tmp_path / "run")
    assert result.epochs_done == 2 and result.steps_done == 6
    assert 0.0 <= result.metrics["cpm"] <= 1.0
    assert set(result.metrics) >= {"cpm", "sens@0.125", "sens@1", "sens@8"}
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert all("cpm" in row for row in curves)
    # ONNX: one heatmap channel on the patch grid, dynamic batch, parity within tolerance
    assert result.export is not None
    assert result.export["output_shape"] == ["batch", 1, 12, 12, 12]
    assert result.export["parity_ok"]
    assert result.export["max_abs_diff"] <= result.export["tolerance"]
    model = get_model(task_catalogue, result.model or "")
    assert model.task == "detection" and model.metrics["cpm"] == result.metrics["cpm"]
    card = model.model_card
    assert card["metrics"]["validation"]["cpm"] == result.metrics["cpm"]
    assert card["training_data"]["task_settings"]["threshold"] == 0.05
    assert any(x.startswith("Detection by heatmap") for x in card["limitations"])
    # subgroups by the evaluation engine's per-case detection sensitivity
    assert [g["metric"] for g in card["metrics"]["subgroups"]] == ["sensitivity"]
    assert parse_recipe((tmp_path / "run" / "recipe.yaml").read_text()) == recipe


def test_detection_target_survives_preprocessing(task_catalogue: Catalogue, tmp_path: Path) -> None:
    # The target heatmap is drawn on the original grid, resampled with the image (1x1x1.5 mm
    # -> 1.5 mm); its peaks, read back in world mm by the candidate code through the
    # preprocessed image's affine, must hit every finding: a perfect heatmap scores CPM 1.
    run = _Run(parse_recipe(DET3D), task_catalogue, tmp_path)
    cands, refs = [], []
    for key, case in zip(run.val_keys, run.val_cases, strict=True):
        assert tuple(case["label"].shape[1:]) == tuple(case["image"].shape[1:])
        heat = case["label"][0].numpy()
        affine = case["image"].affine.numpy()
        cands += [
            {"scan_id": key, **c}
            for c in heatmap_candidates(heat, affine, threshold=0.5, min_distance_mm=4.0)
        ]
        refs += [{"scan_id": key, **f} for f in run.val_findings[key]["nodules"]]
    assert len(cands) == len(refs) >= 2
    froc = luna16_cpm(cands, refs, scan_ids=run.val_keys, bootstrap=0)
    assert froc.cpm == 1.0
    assert froc.n_false_positives == 0
    # and each candidate lies within a voxel (1.5 mm) of its finding's centre
    for c in cands:
        d = min(
            np.linalg.norm([c["x"] - f["x"], c["y"] - f["y"], c["z"] - f["z"]])
            for f in refs
            if f["scan_id"] == c["scan_id"]
        )
        assert d <= 1.5 * np.sqrt(3) / 2 + 1e-6


def test_detection_by_segmentation_trains_and_exports(
    task_catalogue: Catalogue, tmp_path: Path
) -> None:
    result = train(parse_recipe(DET3D_SEG), task_catalogue, tmp_path / "run", register=False)
    assert result.steps_done == 6 and 0.0 <= result.metrics["cpm"] <= 1.0
    assert result.export is not None and result.export["parity_ok"]
    assert result.export["output_shape"] == ["batch", 2, 12, 12, 12]
    # the sphere masks, resampled with nearest neighbour, give back every finding
    run = _Run(parse_recipe(DET3D_SEG), task_catalogue, tmp_path / "x")
    cands, refs = [], []
    for key, case in zip(run.val_keys, run.val_cases, strict=True):
        assert set(np.unique(case["label"].numpy())) <= {0.0, 1.0}
        affine = case["image"].affine.numpy()
        found = component_candidates(case["label"][0].numpy(), affine, threshold=0.5)
        cands += [{"scan_id": key, **c} for c in found]
        refs += [{"scan_id": key, **f} for f in run.val_findings[key]["nodules"]]
    froc = luna16_cpm(cands, refs, scan_ids=run.val_keys, bootstrap=0)
    assert froc.cpm == 1.0 and froc.n_false_positives == 0


def test_detection_same_seed_same_weights(task_catalogue: Catalogue, tmp_path: Path) -> None:
    text = DET3D.replace("epochs: 2", "epochs: 1")
    for folder in ("a", "b"):
        train(parse_recipe(text), task_catalogue, tmp_path / folder, export=False, register=False)
    other = parse_recipe(text.replace("seed: 3", "seed: 4"))
    train(other, task_catalogue, tmp_path / "c", export=False, register=False)
    a, b, c = (_weights(tmp_path / x / "model.pt") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_image_to_image_learns_exports_and_registers(
    task_catalogue: Catalogue, tmp_path: Path
) -> None:
    recipe = parse_recipe(i2i2d(8))
    result = train(recipe, task_catalogue, tmp_path / "run")
    assert set(result.metrics) == {"psnr", "ssim", "mae"}
    assert result.steps_done == 24
    # the denoiser beats doing nothing: PSNR of the noisy inputs against their targets,
    # in the same preprocessed scale (ct_window 0..255 -> 0..1, data range 1)
    run = _Run(recipe, task_catalogue, tmp_path / "x")
    identity = np.mean(
        [psnr(c["image"][0].numpy(), c["label"][0].numpy(), data_range=1.0) for c in run.val_cases]
    )
    assert result.metrics["psnr"] > identity
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.export is not None and result.export["parity_ok"]
    assert result.export["output_shape"] == ["batch", 1, 16, 16]
    model = get_model(task_catalogue, result.model or "")
    assert model.task == "image_to_image" and model.metrics["psnr"] == result.metrics["psnr"]
    assert model.model_card["training_data"]["task_settings"]["residual"] is True
    assert any("preprocessed intensity scale" in x for x in model.model_card["limitations"])


def test_missing_findings_or_wrong_dimensions_are_named(
    task_catalogue: Catalogue, tmp_path: Path
) -> None:
    # balls3d has label maps but no findings objects; nothing is written for a refused run
    text = DET3D.replace("name: nodules3d", "name: balls3d")
    with pytest.raises(InputError, match=r"has 0 findings objects; detection needs exactly one"):
        train(parse_recipe(text), task_catalogue, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    text = i2i2d(1).replace("name: denoise2d", "name: balls3d")
    with pytest.raises(InputError, match=r"is 3D \(shape \[16, 16, 16\]\) but task.spatial_dims"):
        train(parse_recipe(text), task_catalogue, tmp_path / "run")


def test_detection_2d_trains_and_its_targets_give_back_the_findings(
    task_catalogue: Catalogue, tmp_path: Path
) -> None:
    # 2D: findings have z = 0, candidates too; 1 x 1.5 mm pixels resampled to 1 mm
    recipe = parse_recipe(DET2D)
    result = train(recipe, task_catalogue, tmp_path / "run", register=False)
    assert result.steps_done == 6 and 0.0 <= result.metrics["cpm"] <= 1.0
    assert result.export is not None and result.export["output_shape"] == ["batch", 1, 16, 16]
    assert result.export["parity_ok"]
    run = _Run(recipe, task_catalogue, tmp_path / "x")
    cands, refs = [], []
    for key, case in zip(run.val_keys, run.val_cases, strict=True):
        affine = case["image"].affine.numpy()
        found = heatmap_candidates(case["label"][0].numpy(), affine, threshold=0.5)
        assert all(c["z"] == 0.0 for c in found)
        cands += [{"scan_id": key, **c} for c in found]
        refs += [{"scan_id": key, **f} for f in run.val_findings[key]["nodules"]]
    froc = luna16_cpm(cands, refs, scan_ids=run.val_keys, bootstrap=0)
    assert froc.cpm == 1.0 and froc.n_false_positives == 0
