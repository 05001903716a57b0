"""The runner end to end on generated NIfTI folders: segmentation, brats and autopet tasks.

Covers the per-case checks (missing file, wrong shape, NaN, unexpected label, spacing
mismatch), that scored cases equal the metric functions called directly, the worst values
of missing/failed cases, the CLI (with --workers 2 equal to 1) and ranking the results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medarena.cli.main import app
from medarena.errors import ConfigError
from medarena.evaluation.autopet import autopet_case
from medarena.evaluation.brats import BRATS_PENALTY_MM, brats_case, lesion_wise_scores
from medarena.evaluation.policy import image_diagonal_mm
from medarena.evaluation.results import EvaluationResult, metric_spec
from medarena.evaluation.runner import evaluate
from medarena.evaluation.segmentation import HD95Variant, segmentation_metrics, union_box
from medarena.evaluation.tasks import load_nifti, present_values

SPACING = (1.0, 1.2, 2.0)
# what the files hold: NIfTI stores the affine as float32
FILE_SPACING = tuple(float(np.float32(s)) for s in SPACING)
SHAPE = (16, 14, 8)
LABELS = {"liver": 1, "lesion": 2}
METRICS = ["dice", "hd95", "nsd", "assd"]
SEG_CONFIG: dict[str, Any] = {"labels": LABELS, "metrics": METRICS, "nsd_tolerance_mm": 1.5}

cli = CliRunner()


def _save(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return path


def _ball(centre: tuple[float, float, float], radius: float, shape=SHAPE) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING, strict=True))
    return np.asarray(d2 <= radius**2)


def _label_map(shift: int, lesion: bool = True) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint8)
    out[_ball((7 + shift, 7, 4), 6.0)] = 1
    if lesion:
        out[_ball((8 + shift, 6, 4), 2.5)] = 2
    return out


@pytest.fixture
def seg_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """c0, c1 good; c2 missing; c3 wrong shape; c4 NaN; c5 label 7; c6 spacing; c7 no lesion
    predicted (one structure empty); extra.nii.gz has no reference."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    refs = {f"c{i}": _label_map(0) for i in range(8)}
    for cid, r in refs.items():
        _save(ref / f"{cid}.nii.gz", r)
    _save(pred / "c0.nii.gz", _label_map(1))
    _save(pred / "c1.nii", _label_map(2))
    _save(pred / "c3.nii.gz", np.zeros((16, 14, 9), np.uint8))
    nan = _label_map(1).astype(np.float32)
    nan[0, 0, 0] = np.nan
    _save(pred / "c4.nii.gz", nan)
    odd = _label_map(1)
    odd[3, 3, 3] = 7
    _save(pred / "c5.nii.gz", odd)
    _save(pred / "c6.nii.gz", _label_map(1), spacing=(1.0, 1.2, 2.5))
    _save(pred / "c7.nii.gz", _label_map(0, lesion=False))
    _save(pred / "extra.nii.gz", _label_map(0))
    return ref, pred, refs


def _direct(pred: np.ndarray, ref: np.ndarray, label: int) -> dict[str, float]:
    return segmentation_metrics(
        pred == label,
        ref == label,
        FILE_SPACING,
        metrics=METRICS,
        nsd_tolerance_mm=1.5,
    )


def test_segmentation_runner_scores_good_cases_and_fails_bad_ones(seg_folders) -> None:
    ref, pred, refs = seg_folders
    res = evaluate("segmentation", ref, pred, SEG_CONFIG)
    assert res.missing == ["c2"]
    assert set(res.failed) == {"c3", "c4", "c5", "c6"}
    assert "c3.nii.gz" in res.failed["c3"] and "shape" in res.failed["c3"]
    assert "c4.nii.gz" in res.failed["c4"] and "NaN" in res.failed["c4"]
    assert "c5.nii.gz" in res.failed["c5"] and "unexpected label values [7]" in res.failed["c5"]
    assert "c6.nii.gz" in res.failed["c6"] and "spacing mismatch" in res.failed["c6"]
    # scored cases equal the metric function on the same masks
    for cid, shift in (("c0", 1), ("c1", 2)):
        for name, label in LABELS.items():
            want = _direct(_label_map(shift), refs[cid], label)
            got = {m: res.cases[cid][f"{name}/{m}"] for m in want}
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert res.cases["c0"]["liver/dice"] < 1.0 and res.cases["c0"]["liver/hd95"] > 0.0
    # one structure empty in the prediction: the policy's values (diagonal of the full image)
    diag = image_diagonal_mm(SHAPE, FILE_SPACING)
    assert res.cases["c7"]["lesion/dice"] == 0.0
    assert res.cases["c7"]["lesion/hd95"] == pytest.approx(diag)
    liver7 = _direct(_label_map(0, lesion=False), refs["c7"], 1)
    assert res.cases["c7"]["liver/dice"] == pytest.approx(liver7["dice"])
    # missing and failed cases: worst value of every metric, distances = the policy's worst
    for cid in ("c2", "c3", "c4", "c5", "c6"):
        row = res.cases[cid]
        assert set(row) == {f"{s}/{m}" for s in ("liver", "lesion") for m in METRICS}
        assert row["liver/dice"] == 0.0 and row["lesion/nsd"] == 0.0
        assert row["liver/hd95"] == pytest.approx(diag)
        assert row["lesion/assd"] == pytest.approx(diag)
    assert res.aggregate["liver/dice"].n == 8
    assert any("without a reference" in n for n in res.notes)


def test_segmentation_worst_distance_follows_policy_and_overrides(seg_folders) -> None:
    ref, pred, _ = seg_folders
    cfg = {**SEG_CONFIG, "empty": {"worst_distance_mm": 99.0}, "worst_values": {"hd95": 50.0}}
    res = evaluate("segmentation", ref, pred, cfg)
    assert res.cases["c7"]["lesion/hd95"] == 99.0  # the policy, for a scored empty structure
    assert res.cases["c2"]["lesion/assd"] == 99.0  # the policy, for a missing case
    # an explicit worst_values entry wins for the metric it names ("hd95" here is the key
    # as written; qualified names are "lesion/hd95")
    cfg["worst_values"] = {"lesion/hd95": 50.0}
    res = evaluate("segmentation", ref, pred, cfg)
    assert res.cases["c2"]["lesion/hd95"] == 50.0 and res.cases["c2"]["liver/hd95"] == 99.0


def test_binary_segmentation_2d_slices_and_allowed_labels(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    r = np.zeros((12, 12, 1), np.uint8)
    r[3:9, 3:9] = 1
    p = np.zeros((12, 12, 1), np.uint8)
    p[4:10, 3:9] = 1
    _save(ref / "a.nii.gz", r, (0.5, 0.5, 3.0))
    _save(pred / "a.nii.gz", p, (0.5, 0.5, 3.0))
    res = evaluate("segmentation", ref, pred, {"metrics": ["dice", "hd"]})
    # a single slice is scored as a 2D image, plain metric names for a binary mask
    want = segmentation_metrics(p[:, :, 0], r[:, :, 0], (0.5, 0.5), metrics=("dice", "hd"))
    assert res.cases["a"] == pytest.approx(want)
    assert want["hd"] == pytest.approx(0.5)
    # foreground coded 255 needs allowed_labels, and then counts as the mask
    _save(pred / "a.nii.gz", p * 255, (0.5, 0.5, 3.0))
    res = evaluate("segmentation", ref, pred, {"metrics": ["dice"]})
    assert "unexpected label values [255]" in res.failed["a"]
    with pytest.raises(ConfigError, match="labels"):
        evaluate("segmentation", ref, pred, {"labels": {"a": 1}, "regions": {"b": [1]}})
    with pytest.raises(ConfigError, match="background"):
        evaluate("segmentation", ref, pred, {"regions": {"b": [0, 1]}})


def test_load_nifti_keeps_integer_dtype(tmp_path: Path) -> None:
    arr = _label_map(0)
    arr16 = arr.astype(np.int16)
    _save(tmp_path / "u8.nii.gz", arr)
    _save(tmp_path / "i16.nii.gz", arr16)
    a, sp = load_nifti(tmp_path / "u8.nii.gz")
    b, _ = load_nifti(tmp_path / "i16.nii.gz")
    assert a.dtype == np.uint8 and b.dtype == np.int16
    assert sp == pytest.approx(SPACING)
    np.testing.assert_array_equal(a, arr)


def test_union_box_matches_the_definition() -> None:
    rng = np.random.default_rng(3)
    for dtype in (np.uint8, np.int16, np.float32, bool):
        a = np.zeros((9, 8, 7), dtype)
        b = np.zeros((9, 8, 7), dtype)
        assert union_box(a, b) is None
        a[rng.integers(0, 9), rng.integers(0, 8), rng.integers(0, 7)] = 1
        b[2, 5, 1] = 1
        mask = (a != 0) | (b != 0)
        for margin in (0, 2):
            box = union_box(a, b, margin)
            assert box is not None
            idx = np.argwhere(mask)
            for ax, s in enumerate(box):
                assert s.start == max(idx[:, ax].min() - margin, 0)
                assert s.stop == min(idx[:, ax].max() + 1 + margin, mask.shape[ax])


# ------------------------------------------------------------------------------ BraTS


def _brats_map(shift: int, et_label: int = 3) -> np.ndarray:
    shape = (20, 20, 12)
    out = np.zeros(shape, np.uint8)
    out[_ball((10 + shift, 10, 6), 7.0, shape)] = 2
    out[_ball((10 + shift, 10, 6), 4.5, shape)] = et_label
    out[_ball((10 + shift, 10, 6), 2.5, shape)] = 1
    return out


def test_brats_runner_regions_lesion_keys_and_bad_label(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for cid in ("b0", "b1", "b2"):
        _save(ref / f"{cid}.nii.gz", _brats_map(0))
    _save(pred / "b0.nii.gz", _brats_map(1))
    _save(pred / "b1.nii.gz", _brats_map(1, et_label=4))  # 2021 label in a 2023 task
    res = evaluate("brats", ref, pred, {"labels": "2023", "subchallenge": "GLI"})
    want = brats_case(_brats_map(1), _brats_map(0), FILE_SPACING, labels="2023", subchallenge="GLI")
    assert res.cases["b0"] == pytest.approx(want)
    for region in ("WT", "TC", "ET"):
        for m in ("dice", "hd95", "lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fn"):
            assert f"{region}/{m}" in res.cases["b0"]
    assert 0 < res.cases["b0"]["ET/dice"] < 1
    assert "b1.nii.gz" in res.failed["b1"] and "unexpected label values [4]" in res.failed["b1"]
    assert res.missing == ["b2"]
    for cid in ("b1", "b2"):
        assert res.cases[cid]["ET/dice"] == 0.0 and res.cases[cid]["WT/lesion_dice"] == 0.0
        assert res.cases[cid]["TC/hd95"] == BRATS_PENALTY_MM
        assert res.cases[cid]["ET/lesion_hd95"] == BRATS_PENALTY_MM
    # under the 2021 convention the reference's label 3 is the unexpected one, named as such
    res21 = evaluate("brats", ref, pred, {"labels": "2021", "lesion_wise": False})
    reason = res21.failed["b0"]
    assert str(ref / "b0.nii.gz") in reason and "unexpected label values [3]" in reason
    assert set(res21.cases["b0"]) == {
        f"{r}/{m}" for r in ("WT", "TC", "ET") for m in ("dice", "hd95")
    }


# ------------------------------------------------------------------------------ autoPET


def test_autopet_runner_negative_case_and_worst_volumes(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    pos = np.zeros(SHAPE, np.uint8)
    pos[_ball((8, 7, 4), 3.0)] = 1
    ppos = np.zeros(SHAPE, np.uint8)
    ppos[_ball((9, 7, 4), 3.0)] = 1
    ppos[0:2, 0:2, 0:2] = 1  # a false-positive component of 8 voxels
    neg = np.zeros(SHAPE, np.uint8)
    pneg = np.zeros(SHAPE, np.uint8)
    pneg[12:14, 10:12, 5:7] = 1
    for cid, r in (("pos", pos), ("neg", neg), ("negmiss", neg), ("posmiss", pos)):
        _save(ref / f"{cid}.nii.gz", r)
    _save(pred / "pos.nii.gz", ppos)
    _save(pred / "neg.nii.gz", pneg)
    res = evaluate("autopet", ref, pred)
    assert res.cases["pos"] == pytest.approx(autopet_case(ppos, pos, FILE_SPACING))
    assert res.cases["neg"] == pytest.approx({"fpv_ml": 8 * 2.4 / 1000, "negative": 1.0})
    assert "dice" not in res.cases["neg"]
    # missing cases: the keys their reference implies; volumes take the worst scored value
    assert set(res.cases["negmiss"]) == {"fpv_ml", "negative"}
    assert res.cases["negmiss"]["fpv_ml"] == pytest.approx(8 * 2.4 / 1000)
    assert res.cases["posmiss"]["dice"] == 0.0
    assert res.cases["posmiss"]["fnv_ml"] == pytest.approx(res.cases["pos"]["fnv_ml"])
    assert res.aggregate["dice"].n == 2  # positive cases only
    assert any("fpv_ml: no fixed worst" in n for n in res.notes)
    res_all = evaluate("autopet", ref, pred, {"negative": "all"})
    assert res_all.cases["neg"]["dice"] == 0.0 and res_all.cases["neg"]["fnv_ml"] == 0.0


def test_registry_knows_every_metric_the_tasks_emit() -> None:
    for name, higher in (
        ("ET/dice", True),
        ("WT/hd95", False),
        ("TC/lesion_dice", True),
        ("ET/lesion_hd95", False),
        ("ET/lesion_tp", True),
        ("ET/lesion_fn", False),
        ("ET/lesion_fp", False),
        ("liver/nsd", True),
        ("liver/assd", False),
        ("masd", False),
        ("fpv_ml", False),
        ("fnv_ml", False),
    ):
        assert metric_spec(name).higher_is_better is higher, name


# ------------------------------------------------------------------------------ CLI + rank


def test_cli_evaluate_workers_and_rank(seg_folders, tmp_path: Path) -> None:
    ref, pred, _ = seg_folders
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "labels: {liver: 1, lesion: 2}\nmetrics: [dice, hd95, nsd, assd]\nnsd_tolerance_mm: 1.5\n",
        encoding="utf-8",
    )
    outs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.json"
        r = cli.invoke(
            app,
            [
                "evaluate",
                "--task",
                "segmentation",
                "--reference",
                str(ref),
                "--prediction",
                str(pred),
                "--out",
                str(out),
                "--config",
                str(cfg),
                "--workers",
                workers,
            ],
        )
        assert r.exit_code == 0, r.output
        assert "unexpected label values [7]" in r.output
        outs[workers] = json.loads(out.read_text(encoding="utf-8"))
    assert outs["1"]["cases"] == outs["2"]["cases"]
    assert outs["1"]["failed"] == outs["2"]["failed"]
    assert outs["1"]["aggregate"] == outs["2"]["aggregate"]
    direct = evaluate("segmentation", ref, pred, SEG_CONFIG)
    assert outs["1"]["cases"]["c0"] == pytest.approx(direct.cases["c0"])

    # a second, worse team: the same bad files, the good cases predicted 3 voxels off
    pred2 = tmp_path / "pred2"
    pred2.mkdir()
    for f in pred.iterdir():
        (pred2 / f.name).write_bytes(f.read_bytes())
    (pred2 / "c1.nii").unlink()
    for cid in ("c0", "c1", "c7"):
        _save(pred2 / f"{cid}.nii.gz", _label_map(3))
    r = cli.invoke(
        app,
        [
            "evaluate",
            "--task",
            "segmentation",
            "--reference",
            str(ref),
            "--prediction",
            str(pred2),
            "--out",
            str(tmp_path / "worse.json"),
            "--config",
            str(cfg),
        ],
    )
    assert r.exit_code == 0, r.output
    good = tmp_path / "good.json"
    good.write_text((tmp_path / "w1.json").read_text(encoding="utf-8"), encoding="utf-8")
    for metric in ("liver/dice", "liver/hd95"):
        ranking_out = tmp_path / f"rank_{metric.replace('/', '_')}.json"
        r = cli.invoke(
            app,
            [
                "rank",
                str(good),
                str(tmp_path / "worse.json"),
                "--scheme",
                "rank-then-aggregate",
                "--metric",
                metric,
                "--out",
                str(ranking_out),
            ],
        )
        assert r.exit_code == 0, r.output
        ranking = json.loads(ranking_out.read_text(encoding="utf-8"))
        order = [t["team"] for t in ranking["teams"]]
        assert ranking["higher_is_better"][metric] is (metric.endswith("dice"))
        # worse is 3 voxels off where good is 0-2: it loses on Dice and on HD95 alike
        assert order == ["good", "worse"], (metric, ranking)
    r = cli.invoke(
        app,
        [
            "rank",
            str(good),
            str(tmp_path / "worse.json"),
            "--scheme",
            "multi-metric",
            "--metrics",
            "liver/dice,liver/hd95",
        ],
    )
    assert r.exit_code == 0, r.output
    loaded = EvaluationResult.load(tmp_path / "worse.json")
    assert loaded.missing == ["c2"] and set(loaded.failed) == {"c3", "c4", "c5", "c6"}
    assert not math.isnan(loaded.aggregate["lesion/hd95"].mean)


@pytest.mark.parametrize("variant", ["surface_area", "max_directed"])
def test_brats_lesion_pairs_from_region_surfaces_equal_direct_scores(variant: HD95Variant) -> None:
    # two GT lesions 4 voxels apart (not merged at dilation 1); prediction A overshoots
    # lesion 1 towards lesion 2, so A's nearest reference surface is partly lesion 2's:
    # those points must be searched again among lesion 1 only
    shape = (24, 12, 12)
    ref = np.zeros(shape, bool)
    ref[2:9, 3:9, 3:9] = True  # lesion 1
    ref[13:20, 3:9, 3:9] = True  # lesion 2
    a = np.zeros(shape, bool)
    a[2:12, 3:9, 4:9] = True
    b = np.zeros(shape, bool)
    b[14:20, 3:8, 3:9] = True
    fp = np.zeros(shape, bool)
    fp[20:22, 10:12, 0:2] = True
    pred = a | b | fp
    sp = (1.0, 0.8, 1.5)
    got = lesion_wise_scores(
        pred, ref, sp, dilation=1, volume_threshold_mm3=2.0, hd95_variant=variant
    )
    l1, l2 = ref.copy(), ref.copy()
    l1[12:] = False
    l2[:12] = False
    opts: dict[str, Any] = {"metrics": ("dice", "hd95"), "hd95_variant": variant}
    m1 = segmentation_metrics(a, l1, sp, **opts)
    m2 = segmentation_metrics(b, l2, sp, **opts)
    assert got["lesion_tp"] == 2 and got["lesion_fp"] == 1 and got["lesion_fn"] == 0
    assert got["lesion_dice"] == pytest.approx((m1["dice"] + m2["dice"]) / 3)
    assert got["lesion_hd95"] == pytest.approx((m1["hd95"] + m2["hd95"] + BRATS_PENALTY_MM) / 3)
    # and the legacy region scores of brats_case equal the plain region metrics
    labels = np.where(ref, 3, 0).astype(np.uint8)
    plabels = np.where(pred, 3, 0).astype(np.uint8)
    case = brats_case(plabels, labels, sp, subchallenge="MET", hd95_variant=variant)
    whole = segmentation_metrics(pred, ref, sp, **opts)
    assert case["ET/dice"] == pytest.approx(whole["dice"])
    assert case["ET/hd95"] == pytest.approx(whole["hd95"])
    assert case["ET/lesion_dice"] == pytest.approx(got["lesion_dice"])


def _lesion_wise_literal(
    pred: np.ndarray, ref: np.ndarray, sp: tuple[float, ...], dil: int, thr: float
) -> dict[str, float]:
    """The BraTS 2023 lesion-wise steps done literally on the full image (no crops, no
    reuse): the cross-check of lesion_wise_scores' shortcuts."""
    import cc3d
    from scipy import ndimage as ndi

    st = ndi.generate_binary_structure(3, 2)
    pred_cc = cc3d.connected_components(pred, connectivity=26)
    ref_cc = cc3d.connected_components(ref, connectivity=26)
    dil_cc = cc3d.connected_components(
        ndi.binary_dilation(ref, st, iterations=dil), connectivity=26
    )
    merged = np.where(ref_cc > 0, dil_cc, 0)
    rows, used = [], set()
    for k in [int(v) for v in np.unique(merged) if v]:
        g = merged == k
        hits = [int(h) for h in np.unique(pred_cc[ndi.binary_dilation(g, st, iterations=dil)]) if h]
        used.update(hits)
        vol = g.sum() * float(np.prod(sp))
        if not hits:
            rows.append((vol, 0.0, BRATS_PENALTY_MM))
            continue
        m = segmentation_metrics(
            np.isin(pred_cc, hits), g, sp, metrics=("dice", "hd95"), hd95_variant="surface_area"
        )
        rows.append((vol, m["dice"], m["hd95"]))
    kept = [r for r in rows if r[0] > thr]
    n_fp = int(pred_cc.max()) - len(used)
    n = len(kept) + n_fp
    return {
        "lesion_dice": sum(r[1] for r in kept) / n if n else 1.0,
        "lesion_hd95": (sum(r[2] for r in kept) + BRATS_PENALTY_MM * n_fp) / n if n else 0.0,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lesion_wise_scores_equal_the_literal_algorithm(seed: int) -> None:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    shape = (40, 36, 24)

    def blobs(level: float) -> np.ndarray:
        g = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
        return np.asarray(g / g.std() > level)

    ref = blobs(1.3)  # some 30 lesions, some close enough to merge
    band = ndi.binary_dilation(ref, iterations=2) & ~ndi.binary_erosion(ref, iterations=2)
    # shifted lesions with boundary errors, plus extra components (false positives)
    pred = np.roll(ref, (1, -1), axis=(0, 1)) ^ (blobs(0.8) & band)
    pred |= blobs(2.2)
    sp = (1.0, 1.2, 2.0)
    for dil, thr in ((1, 2.0), (3, 50.0)):
        got = lesion_wise_scores(pred, ref, sp, dilation=dil, volume_threshold_mm3=thr)
        want = _lesion_wise_literal(pred, ref, sp, dil, thr)
        assert got["lesion_dice"] == pytest.approx(want["lesion_dice"], rel=1e-9)
        assert got["lesion_hd95"] == pytest.approx(want["lesion_hd95"], rel=1e-9)


def test_evaluate_help_names_the_label_map_tasks_and_keys() -> None:
    r = cli.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for word in ("segmentation", "brats", "autopet", "allowed_labels", "subchallenge"):
        assert word in r.output, word


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float32, bool]
)
@pytest.mark.parametrize("low,high", [(0, 1), (0, 5), (2, 3), (-3, 5), (0, 40), (-70000, 70000)])
def test_present_values_equal_numpy_unique(dtype: Any, low: int, high: int) -> None:
    rng = np.random.default_rng(abs(low) * 31 + abs(high))
    kind = np.dtype(dtype).kind
    if kind == "b":
        low, high = 0, 1
    elif kind in "ui":  # clip the range to what the type holds
        info = np.iinfo(dtype)
        low, high = max(low, int(info.min)), min(high, int(info.max))
    arr = rng.integers(low, high + 1, (12, 9, 7)).astype(dtype)
    # Fortran-ordered views, as NIfTI arrays come, and a single value
    for a in (arr, arr.T, arr[2:3, 1:2, 0:1]):
        got = present_values(a)
        assert np.array_equal(got, np.unique(a)) and got.dtype == np.unique(a).dtype
