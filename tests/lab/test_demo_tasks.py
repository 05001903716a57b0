"""The demo's detection and image-to-image data, as stored by the platform, feed the lab.

No training: the lung-nodule findings (world mm, from the generator's CSVs) drawn as the
lab's target heatmaps and read back by the candidate code score CPM 1 against themselves
(geometry of stored data, targets and candidates agree); the low-dose CT slices, stored as
3D images of one slice, serve a 2D recipe, and the example recipe's intensity scaling keeps
PSNR / SSIM (ref_max) equal to those of the unscaled images the challenge track scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.findings import attach_findings
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.demo.generators import lowdose_ct, lung_nodules
from medarena.evaluation.detection import luna16_cpm
from medarena.evaluation.image import image_metrics
from medarena.imaging.nifti import read_nifti
from medarena.lab import load_recipe
from medarena.lab.detection import heatmap_candidates
from medarena.lab.trainer import _Run

EXAMPLES = Path(__file__).parents[2] / "examples" / "lab"
SPLIT = SplitSpec(name="demo", subsets=("train", "validation"), ratios=(0.25, 0.75), group_by=None)


@pytest.fixture(scope="module")
def demo_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogue]:
    root = tmp_path_factory.mktemp("demo-lab")
    cat = open_catalogue(get_settings(data_dir=root / "data"))
    ln = lung_nodules.generate(root / "ln", n_train=8, n_test=0, seed=3, size="tiny")
    ingest(cat, ln.ingest_dir, "demo-lung-nodules")
    attach_findings(
        cat,
        "demo-lung-nodules",
        root / "ln" / "annotations.csv",
        root / "ln" / "annotations_excluded.csv",
    )
    make_split(cat, "demo-lung-nodules", SPLIT)
    ld = lowdose_ct.generate(root / "ld", n_train=4, n_test=0, seed=3, size="tiny")
    ingest(cat, ld.ingest_dir, "demo-lowdose-ct")
    make_split(cat, "demo-lowdose-ct", SPLIT)
    yield cat
    cat.close()


def test_lung_nodule_targets_give_back_the_findings(
    demo_catalogue: Catalogue, tmp_path: Path
) -> None:
    recipe = load_recipe(EXAMPLES / "lung-nodules-heatmap.yaml")
    d = recipe.task.detection
    assert d is not None
    run = _Run(recipe, demo_catalogue, tmp_path)
    cands, refs, excluded = [], [], []
    for key, case in zip(run.val_keys, run.val_cases, strict=True):
        affine = case["image"].affine.numpy()
        found = heatmap_candidates(
            case["label"][0].numpy(),
            affine,
            threshold=0.5,
            min_distance_mm=d.min_distance_mm,
            max_candidates=d.max_candidates,
        )
        cands += [{"scan_id": key, **c} for c in found]
        refs += [{"scan_id": key, **f} for f in run.val_findings[key]["nodules"]]
        excluded += [{"scan_id": key, **f} for f in run.val_findings[key]["excluded"]]
    assert len(refs) >= 2
    # nodules of 3-30 mm on 10 x 10 x 12 mm voxels: only sub-voxel peaks hit the small ones
    froc = luna16_cpm(cands, refs, scan_ids=run.val_keys, excluded=excluded, bootstrap=0)
    assert froc.cpm == 1.0 and froc.n_false_positives == 0
    assert min(f["diameter_mm"] for f in refs) < 10.0  # the check includes sub-voxel nodules


def test_lowdose_slices_serve_a_2d_recipe_with_the_tracks_psnr(
    demo_catalogue: Catalogue, tmp_path: Path
) -> None:
    recipe = load_recipe(EXAMPLES / "lowdose-ct-denoising.yaml")
    run = _Run(recipe, demo_catalogue, tmp_path)
    for case in run.val_cases:
        assert case["image"].ndim == 3 and case["label"].shape == case["image"].shape  # (1, n, n)
    # the identity "denoiser" in the lab's scale scores what the track scores on the files
    store = demo_catalogue.store
    records = {r["case_key"]: r for r in _records(demo_catalogue)}
    for key, case in zip(run.val_keys, run.val_cases, strict=True):
        lab = image_metrics(
            case["image"][0].numpy(), case["label"][0].numpy(), data_range="ref_max"
        )
        objs = {o["role"]: o["digest"] for o in records[key]["objects"]}
        raw_in = read_nifti(store.path_of(objs["image"])).array
        raw_ref = read_nifti(store.path_of(objs["label"])).array
        track = image_metrics(raw_in, raw_ref, data_range="ref_max")
        assert lab["psnr"] == pytest.approx(track["psnr"], abs=1e-3)
        assert lab["ssim"] == pytest.approx(track["ssim"], abs=1e-3)
        assert np.isfinite(lab["psnr"])


def _records(cat: Catalogue) -> list[dict[str, object]]:
    from medarena.datasets.catalogue import case_records

    return case_records(cat, "demo-lowdose-ct")
