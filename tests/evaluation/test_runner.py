"""The evaluation runner end to end on small generated NIfTI folders and CSV files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medarena.errors import ConfigError, InputError
from medarena.evaluation.results import EvaluationResult
from medarena.evaluation.runner import available_tasks, evaluate, load_task_config


def test_image_task_scores_good_cases_and_reports_bad_ones(image_folders, tmp_path) -> None:
    ref, pred, _ = image_folders
    calls: list[tuple[int, int]] = []
    res = evaluate(
        "image-to-image",
        ref,
        pred,
        {"data_range": 100.0},
        progress=lambda d, t: calls.append((d, t)),
    )
    assert res.task == "image-to-image"
    assert res.missing == ["c2"]
    assert set(res.failed) == {"c3", "c4", "c5", "c6"}
    assert "c3.nii.gz" in res.failed["c3"] and "shape" in res.failed["c3"]
    assert "c4.nii.gz" in res.failed["c4"] and "NaN" in res.failed["c4"]
    assert "spacing" in res.failed["c5"]
    assert "c6.nii.gz" in res.failed["c6"] and "unreadable" in res.failed["c6"]
    # Scored cases: prediction = reference + 1 (c0) and + 2 (c1), data range 100.
    assert res.cases["c0"]["mae"] == pytest.approx(1.0, abs=1e-5)
    assert res.cases["c1"]["psnr"] == pytest.approx(10 * math.log10(100**2 / 4.0), abs=1e-4)
    # Missing/failed cases take the worst value: SSIM registry worst -1; PSNR has none,
    # so it is the worst scored case (c1); MAE likewise (c1's 2.0).
    for cid in ("c2", "c3", "c4", "c5", "c6"):
        assert res.cases[cid]["ssim"] == -1.0
        assert res.cases[cid]["psnr"] == pytest.approx(res.cases["c1"]["psnr"])
        assert res.cases[cid]["mae"] == pytest.approx(2.0, abs=1e-5)
    assert res.aggregate["mae"].n == 7
    assert res.aggregate["mae"].mean == pytest.approx((1 + 2 * 6) / 7, abs=1e-5)
    assert calls[-1] == (6, 6)
    assert any("without a reference" in n for n in res.notes)
    # result.json round trip (PSNR can be +inf for a perfect case).
    out = res.save(tmp_path / "out" / "result.json")
    assert EvaluationResult.load(out) == res


def test_worker_pool_gives_the_same_result(image_folders) -> None:
    ref, pred, _ = image_folders
    one = evaluate("image-to-image", ref, pred, {"data_range": 100.0}, workers=1)
    two = evaluate("image-to-image", ref, pred, {"data_range": 100.0}, workers=2)
    assert one == two


def test_dose_folder_layout(tmp_path: Path, nifti_writer) -> None:
    write_nifti = nifti_writer
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    (ref / "pt1").mkdir(parents=True)
    pred.mkdir()
    dose = np.zeros((6, 6, 4), np.float32)
    dose[1:5, 1:5, :] = 60.0
    ptv = np.zeros((6, 6, 4), np.uint8)
    ptv[2:4, 2:4, 1:3] = 1
    write_nifti(ref / "pt1" / "dose.nii.gz", dose, spacing=(2.0, 2.0, 2.5))
    write_nifti(
        ref / "pt1" / "possible_dose_mask.nii.gz",
        (dose > 0).astype(np.uint8),
        spacing=(2.0, 2.0, 2.5),
    )
    write_nifti(ref / "pt1" / "PTV70.nii.gz", ptv, spacing=(2.0, 2.0, 2.5))
    write_nifti(pred / "pt1.nii.gz", dose - 2.0 * (dose > 0), spacing=(2.0, 2.0, 2.5))
    res = evaluate("dose", ref, pred)
    assert res.cases["pt1"]["dose_score"] == pytest.approx(2.0)
    assert res.cases["pt1"]["dvh_error/D_95/PTV70"] == pytest.approx(2.0)
    assert res.dataset_metrics["dose_score"] == pytest.approx(2.0)
    assert res.dataset_metrics["dvh_score"] == pytest.approx(2.0)


def test_binary_classification_csv(tmp_path: Path) -> None:
    ref = tmp_path / "ref.csv"
    pred = tmp_path / "pred.csv"
    ref.write_text("case_id,label\na,1\nb,0\nc,1\nd,0\ne,1\nf,0\n", encoding="utf-8")
    # e missing; f has a non-number score and fails.
    pred.write_text("case_id,score\na,0.9\nb,0.2\nc,0.4\nd,0.6\nf,abc\nzz,0.5\n", encoding="utf-8")
    res = evaluate("classification", ref, pred)
    assert res.missing == ["e"]
    assert set(res.failed) == {"f"} and "pred.csv" in res.failed["f"] and "'abc'" in res.failed["f"]
    # worst predictions: e (label 1) -> score 0, f (label 0) -> score 1.
    y = [1, 0, 1, 0, 1, 0]
    s = [0.9, 0.2, 0.4, 0.6, 0.0, 1.0]
    assert res.dataset_metrics["auc"] == pytest.approx(roc_auc_score(y, s))
    assert {c: v["correct"] for c, v in res.cases.items()} == {
        "a": 1.0,
        "b": 1.0,
        "c": 0.0,
        "d": 0.0,
        "e": 0.0,
        "f": 0.0,
    }
    assert res.aggregate["correct"].mean == pytest.approx(2 / 6)


def test_multiclass_and_multilabel_csv(tmp_path: Path) -> None:
    ref = tmp_path / "ref.csv"
    pred = tmp_path / "pred.csv"
    ref.write_text("case_id,label\na,cat\nb,dog\nc,2\n", encoding="utf-8")
    pred.write_text(
        "case_id,cat,dog,fox\na,0.8,0.1,0.1\nb,0.2,0.7,0.1\nc,0.5,0.2,0.3\n", encoding="utf-8"
    )
    res = evaluate("classification", ref, pred, {"mode": "multiclass"})
    assert [res.cases[c]["correct"] for c in "abc"] == [1.0, 1.0, 0.0]
    assert res.dataset_metrics["accuracy"] == pytest.approx(2 / 3)

    ref.write_text("case_id,N,D\na,1,0\nb,0,1\nc,1,1\nd,0,0\n", encoding="utf-8")
    pred.write_text("case_id,N,D\na,0.9,0.2\nb,0.1,0.8\nc,0.7,0.3\n", encoding="utf-8")
    ml = evaluate("multilabel", ref, pred)
    assert ml.missing == ["d"]
    assert ml.cases["c"]["hamming_accuracy"] == 0.5
    assert ml.cases["d"]["hamming_accuracy"] == 0.0  # worst: 1 - label everywhere
    t = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.3], [1.0, 1.0]])
    assert ml.dataset_metrics["auc"] == pytest.approx(roc_auc_score(t, s, average="macro"))


def test_regression_csv(tmp_path: Path) -> None:
    ref = tmp_path / "ref.csv"
    pred = tmp_path / "pred.csv"
    ref.write_text("case_id,value\na,20\nb,40\nc,70\nd,30\n", encoding="utf-8")
    pred.write_text("case_id,value\na,22\nb,37\nc,nan\n", encoding="utf-8")
    res = evaluate("regression", ref, pred)
    assert res.missing == ["d"] and "finite" in res.failed["c"]
    # worst prediction inside the reference range [20, 70]: c (70) -> 20, d (30) -> 70.
    assert res.cases["c"]["abs_error"] == 50.0 and res.cases["d"]["abs_error"] == 40.0
    assert res.dataset_metrics["mae"] == pytest.approx((2 + 3 + 50 + 40) / 4)


def test_detection_csv(tmp_path: Path) -> None:
    ref = tmp_path / "ref.csv"
    pred = tmp_path / "pred.csv"
    ref.write_text(
        "case_id,x,y,z,diameter_mm\ns1,0,0,0,10\ns1,50,50,50,6\ns2,10,10,10,8\ns3,,,,\n",
        encoding="utf-8",
    )
    pred.write_text(
        "case_id,x,y,z,probability\ns1,1,1,1,0.9\ns1,90,90,90,0.8\ns3,5,5,5,0.3\n", encoding="utf-8"
    )
    res = evaluate("detection", ref, pred, {"bootstrap": 20})
    assert res.missing == ["s2"]
    assert res.cases["s1"] == {
        "n_nodules": 2.0,
        "n_detected": 1.0,
        "n_false_positives": 1.0,
        "sensitivity": 0.5,
    }
    assert res.cases["s2"]["n_detected"] == 0.0
    assert math.isnan(res.cases["s3"]["sensitivity"])
    assert res.cases["s3"]["n_false_positives"] == 1.0
    # 3 nodules, one found (probability 0.9) before any FP: sensitivity 1/3 at every FP rate.
    assert res.dataset_metrics["cpm"] == pytest.approx(1 / 3)
    assert "cpm_ci_low" in res.dataset_metrics


def test_whole_input_errors(tmp_path: Path, image_folders) -> None:
    ref, pred, _ = image_folders
    with pytest.raises(InputError, match="unknown task"):
        evaluate("nope", ref, pred)
    with pytest.raises(ConfigError, match="data_range"):
        evaluate("image-to-image", ref, pred, {"data_range": "max"})
    with pytest.raises(ConfigError, match="typo: Extra inputs"):
        evaluate("image-to-image", ref, pred, {"typo": 1})
    with pytest.raises(InputError, match="CSV file"):
        evaluate("regression", ref, pred)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no case"):
        evaluate("image-to-image", empty, pred)
    bad = tmp_path / "x.csv"
    bad.write_text("id,value\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match="case_id"):
        evaluate("regression", bad, bad)
    cfg = tmp_path / "task.yaml"
    cfg.write_text("data_range: 100\nslice_axis: 0\n", encoding="utf-8")
    assert load_task_config(cfg) == {"data_range": 100, "slice_axis": 0}
    assert {"classification", "regression", "detection", "image-to-image", "dose"} <= set(
        available_tasks()
    )
