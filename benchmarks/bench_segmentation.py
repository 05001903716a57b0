"""Benchmark: segmentation scoring vs file loading vs MONAI on BraTS-sized cases.

Generates N cases of 240x240x155 label maps (BraTS 2023 labels: WT ⊃ TC ⊃ ET, a tumour
with a lumpy boundary; the prediction has boundary errors, a shifted core and a small false
positive), writes them as .nii.gz to a temporary folder, then per case:

- load: reading both files with nibabel (what any scorer must do);
- ours: Dice + HD95 + NSD(1 mm) for WT/TC/ET with :func:`per_region` on the loaded arrays;
- MONAI: DiceMetric + HausdorffDistanceMetric(percentile=95) + SurfaceDiceMetric on the same
  arrays (one-hot WT/TC/ET channels), values checked against ours.

Then the real runner on the two folders, as ``medarena evaluate`` runs it (each case read by
``tasks.load_nifti`` through ``medarena.imaging``, validated and scored):

- load alone: ``tasks.load_nifti`` of both files per case, one process;
- ``evaluate("segmentation", ...)`` with regions WT/TC/ET and Dice + HD95 + NSD(1 mm), and
  ``evaluate("brats", ...)`` (2023 labels, GLI lesion-wise, surfel HD95), with 1 and 2
  workers: wall seconds per case, and the ratio of load + score to load alone (1 worker).

Run: ``.venv/bin/python benchmarks/bench_segmentation.py [--cases 20] [--no-monai]
[--no-runner]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from medarena.evaluation.brats import BRATS_REGIONS, brats_case
from medarena.evaluation.runner import evaluate
from medarena.evaluation.segmentation import per_region
from medarena.evaluation.tasks import load_nifti

SHAPE = (240, 240, 155)
SPACING = (1.0, 1.0, 1.0)
REGIONS = BRATS_REGIONS["2023"]


def _lumpy_ball(
    rng: np.random.Generator, centre: np.ndarray, radius: float, lump: float
) -> np.ndarray:
    """Ball with a smooth random boundary (noise generated coarse, then zoomed for speed)."""
    coarse = ndi.gaussian_filter(rng.standard_normal((30, 30, 20)), 2.0)
    coarse /= coarse.std() + 1e-9
    noise = ndi.zoom(coarse, [s / c for s, c in zip(SHAPE, coarse.shape, strict=True)], order=1)
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return np.asarray(np.sqrt(d2) < radius * (1.0 + lump * noise))


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (reference, prediction) pair of BraTS 2023 label maps."""
    rng = np.random.default_rng(seed)
    c = np.array([rng.uniform(90, 150), rng.uniform(90, 150), rng.uniform(60, 95)])
    r_wt = rng.uniform(22, 38)
    wt = _lumpy_ball(rng, c, r_wt, 0.15)
    tc = _lumpy_ball(rng, c + rng.normal(0, 3, 3), 0.6 * r_wt, 0.2) & wt
    core = ndi.binary_erosion(tc, iterations=3)
    ref = np.zeros(SHAPE, np.uint8)
    ref[wt] = 2
    ref[tc] = 3
    ref[core] = 1
    # prediction: WT boundary moved by a different lumpy field, TC shifted, ET rim thicker
    pwt = _lumpy_ball(rng, c + rng.normal(0, 1.5, 3), r_wt * rng.uniform(0.92, 1.08), 0.15)
    ptc = _lumpy_ball(rng, c + rng.normal(0, 3, 3), 0.6 * r_wt, 0.2) & pwt
    pcore = ndi.binary_erosion(ptc, iterations=2)
    pred = np.zeros(SHAPE, np.uint8)
    pred[pwt] = 2
    pred[ptc] = 3
    pred[pcore] = 1
    fp = np.clip((c + rng.choice([-1, 1], 3) * (r_wt + 15)).astype(int), 5, np.array(SHAPE) - 8)
    pred[fp[0] : fp[0] + 3, fp[1] : fp[1] + 3, fp[2] : fp[2] + 3] = 3  # small ET false positive
    return ref, pred


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.uint8)  # type: ignore[attr-defined]


def monai_scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric

    def onehot(lab: np.ndarray) -> torch.Tensor:
        chans = [np.isin(lab, REGIONS[r]) for r in REGIONS]
        return torch.from_numpy(np.stack(chans)[None].astype(np.float32))

    p, g = onehot(pred), onehot(ref)
    dm = DiceMetric(include_background=True, ignore_empty=False)
    hd = HausdorffDistanceMetric(include_background=True, percentile=95)
    sd = SurfaceDiceMetric([1.0] * 3, include_background=True)
    d = dm(p, g)[0]
    h = hd(p, g, spacing=SPACING)[0]
    s = sd(p, g, spacing=SPACING)[0]
    out = {}
    for i, r in enumerate(REGIONS):
        out[f"{r}/dice"], out[f"{r}/hd95"], out[f"{r}/nsd"] = (
            float(d[i]),
            float(h[i]),
            float(s[i]),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--no-monai", action="store_true", help="skip the MONAI comparison")
    ap.add_argument("--no-runner", action="store_true", help="skip the runner measurements")
    args = ap.parse_args()
    if not args.no_monai:
        import torch

        torch.set_num_threads(1)  # a like-for-like, single-threaded comparison

    with tempfile.TemporaryDirectory() as tmp:
        ref_dir, pred_dir = Path(tmp) / "ref", Path(tmp) / "pred"
        ref_dir.mkdir()
        pred_dir.mkdir()
        t0 = time.perf_counter()
        for i in range(args.cases):
            ref, pred = make_case(i)
            affine = np.diag([*SPACING, 1.0])
            nib.save(nib.Nifti1Image(ref, affine), str(ref_dir / f"case_{i:03d}.nii.gz"))
            nib.save(nib.Nifti1Image(pred, affine), str(pred_dir / f"case_{i:03d}.nii.gz"))
        print(f"generated {args.cases} cases in {time.perf_counter() - t0:.1f} s")

        t_load = t_ours = t_monai = t_brats = 0.0
        max_diff = {"dice": 0.0, "hd95": 0.0, "nsd": 0.0}
        for i in range(args.cases):
            t = time.perf_counter()
            ref = load(ref_dir / f"case_{i:03d}.nii.gz")
            pred = load(pred_dir / f"case_{i:03d}.nii.gz")
            t_load += time.perf_counter() - t

            t = time.perf_counter()
            ours = per_region(
                pred, ref, SPACING, REGIONS, metrics=("dice", "hd95", "nsd"), nsd_tolerance_mm=1.0
            )
            t_ours += time.perf_counter() - t

            t = time.perf_counter()
            brats_case(pred, ref, SPACING, labels="2023", subchallenge="GLI")
            t_brats += time.perf_counter() - t

            if not args.no_monai:
                t = time.perf_counter()
                theirs = monai_scores(pred, ref)
                t_monai += time.perf_counter() - t
                for key, v in theirs.items():
                    m = key.split("/")[1]
                    max_diff[m] = max(max_diff[m], abs(v - ours[key]))

        n = args.cases
        print(f"load both files       : {t_load / n:.3f} s/case")
        print(
            f"ours Dice+HD95+NSD    : {t_ours / n:.3f} s/case (ratio to load {t_ours / t_load:.2f})"
        )
        print(
            f"load + ours           : {(t_load + t_ours) / n:.3f} s/case "
            f"({(t_load + t_ours) / t_load:.2f}x load alone)"
        )
        print(f"brats_case lesion-wise: {t_brats / n:.3f} s/case (GLI, surfel HD95)")
        if not args.no_monai:
            print(
                f"MONAI same metrics    : {t_monai / n:.3f} s/case "
                f"(ours is {t_monai / t_ours:.1f}x faster)"
            )
            print(f"max |ours - MONAI|    : {max_diff}")
        if not args.no_runner:
            run_runner(ref_dir, pred_dir, n)


def run_runner(ref_dir: Path, pred_dir: Path, n: int) -> None:
    """Time the runner on the folders against reading the same files alone."""
    t = time.perf_counter()
    for f in sorted(ref_dir.iterdir()):
        load_nifti(f)
        load_nifti(pred_dir / f.name)
    t_load = (time.perf_counter() - t) / n
    print(f"runner: load_nifti both files alone          : {t_load:.3f} s/case")
    seg_cfg = {
        "regions": {k: list(v) for k, v in REGIONS.items()},
        "metrics": ["dice", "hd95", "nsd"],
        "nsd_tolerance_mm": 1.0,
    }
    for task, cfg in (("segmentation", seg_cfg), ("brats", {"labels": "2023"})):
        for workers in (1, 2):
            t = time.perf_counter()
            res = evaluate(task, ref_dir, pred_dir, cfg, workers=workers)
            wall = (time.perf_counter() - t) / n
            assert not res.failed and not res.missing, (res.failed, res.missing)
            extra = f" ({wall / t_load:.2f}x load alone)" if workers == 1 else ""
            print(f"runner: {task:12s} workers={workers} load + score : {wall:.3f} s/case{extra}")


if __name__ == "__main__":
    main()
