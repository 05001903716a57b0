"""Low-dose CT demo generator: packaged slices, sinogram noise, PSNR/SSIM, ingest, determinism."""

from __future__ import annotations

import math
import site
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gen_ingest_checks import assert_metadata_arrived, assert_same_bytes, ingest_track, metadata

from medarena.demo.generators import lowdose_ct
from medarena.demo.generators.common import GeneratedTrack, case_rng
from medarena.evaluation.image import image_metrics
from medarena.evaluation.runner import evaluate
from medarena.evaluation.subgroups import read_case_attributes, subgroup_analysis

N_TRAIN, N_TEST, SEED = 6, 3, 5


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return lowdose_ct.generate(
        tmp_path_factory.mktemp("ldct"), n_train=N_TRAIN, n_test=N_TEST, seed=SEED, size="tiny"
    )


def _pair(track: GeneratedTrack, cid: str) -> tuple[np.ndarray, np.ndarray]:
    sub = "Tr" if cid in track.train_ids else "Ts"
    low = np.asarray(nib.load(track.ingest_dir / f"images{sub}" / f"{cid}_0000.nii.gz").dataobj)
    target = np.asarray(nib.load(track.ingest_dir / f"labels{sub}" / f"{cid}.nii.gz").dataobj)
    return low, target


def test_real_slices_come_from_installed_files() -> None:
    slices = lowdose_ct.real_slices()
    assert [s.source for s in slices] == [
        "pydicom:CT_small.dcm",
        "pydicom:693_UNCR.dcm",
        "pydicom:eCT_Supplemental.dcm#frame1",
        "pydicom:eCT_Supplemental.dcm#frame2",
    ]
    from pydicom.data import get_testdata_file

    roots = [Path(p).resolve() for p in site.getsitepackages()]
    for name in lowdose_ct.REAL_FILES:
        path = Path(str(get_testdata_file(name, download=False))).resolve()
        assert any(path.is_relative_to(r) for r in roots), path
    for s in slices:
        # in HU: air or lung below -800 somewhere, tissue above 100 somewhere
        assert s.hu.min() < -800 and s.hu.max() > 100 and 0.2 < s.pixel_mm < 1.0


def test_real_and_phantom_cases_alternate(track: GeneratedTrack) -> None:
    meta = metadata(track)
    sources = [meta[c]["source"] for c in (*track.train_ids, *track.test_ids)]
    assert sources[1::2] == ["phantom:shepp-logan"] * len(sources[1::2])
    assert all(s.startswith("pydicom:") for s in sources[::2])
    assert set(track.real_parts) == {s.source for s in lowdose_ct.real_slices()}


def test_psnr_ssim_of_target_and_low_dose_input(track: GeneratedTrack) -> None:
    for cid in (*track.train_ids, *track.test_ids):
        low, target = _pair(track, cid)
        assert target.dtype == np.uint16 and low.dtype == np.float32
        assert low.shape == target.shape == (64, 64, 1)
        self_m = image_metrics(target, target)
        assert self_m["psnr"] == math.inf and self_m["ssim"] == 1.0
        m = image_metrics(low, target)
        assert 15.0 < m["psnr"] < 60.0 and 0.2 < m["ssim"] < 1.0


def test_fewer_photons_give_more_noise() -> None:
    hu = lowdose_ct._phantom(case_rng(0, "ldct-test", 0), 64)
    pixel = lowdose_ct.PHANTOM_FOV_MM / 64
    psnr = {}
    for site_name, (_vendor, photons) in lowdose_ct.SITES.items():
        target, low = lowdose_ct.simulate(case_rng(0, "ldct-test", 1), hu, pixel, 90, photons)
        psnr[site_name] = image_metrics(low + 1024, target + 1024)["psnr"]
    assert psnr["site-A"] > psnr["site-B"] > psnr["site-C"]
    # the target is the noise-free reconstruction: without noise, input == target
    t1, _ = lowdose_ct.simulate(case_rng(0, "ldct-test", 1), hu, pixel, 90, 1e4)
    t2, _ = lowdose_ct.simulate(case_rng(0, "ldct-test", 2), hu, pixel, 90, 1e5)
    np.testing.assert_array_equal(t1, t2)


def test_evaluate_reference_against_itself_and_low_dose(
    track: GeneratedTrack, tmp_path: Path
) -> None:
    perfect = evaluate(track.task, track.reference, track.reference, track.task_config)
    assert not perfect.failed and set(perfect.cases) == set(track.test_ids)
    for m in perfect.cases.values():
        assert m["psnr"] == math.inf and m["ssim"] == 1.0 and m["rmse"] == 0.0
    low = tmp_path / "low"
    low.mkdir()
    for cid in track.test_ids:
        src = track.ingest_dir / "imagesTs" / f"{cid}_0000.nii.gz"
        (low / f"{cid}.nii.gz").write_bytes(src.read_bytes())
    noisy = evaluate(track.task, track.reference, low, track.task_config)
    assert not noisy.failed
    for m in noisy.cases.values():
        assert m["psnr"] < 60.0 and m["ssim"] < 1.0


def test_same_seed_same_bytes(track: GeneratedTrack, tmp_path: Path) -> None:
    again = lowdose_ct.generate(tmp_path, n_train=N_TRAIN, n_test=N_TEST, seed=SEED, size="tiny")
    assert_same_bytes(track, again)


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "demo-ldct")
    assert_metadata_arrived(track, records, 1, lambda s: lowdose_ct.SITES[s][0])
    meta = metadata(track)
    for cid, rec in records.items():
        assert rec["labels"]["source"] == meta[cid]["source"]
        if meta[cid]["source"].startswith("phantom"):
            assert rec["spacing"][0] == pytest.approx(lowdose_ct.PHANTOM_FOV_MM / 64, abs=1e-3)
        else:  # a real slice keeps its own (cropped, resampled) pixel size
            assert 0.2 < rec["spacing"][0] < 10.0


def test_subgroup_analysis_by_site_shows_the_dose_effect(tmp_path: Path) -> None:
    t = lowdose_ct.generate(tmp_path / "t", n_train=0, n_test=12, seed=1, size="tiny")
    low = tmp_path / "low"
    low.mkdir()
    for cid in t.test_ids:
        src = t.ingest_dir / "imagesTs" / f"{cid}_0000.nii.gz"
        (low / f"{cid}.nii.gz").write_bytes(src.read_bytes())
    result = evaluate(t.task, t.reference, low, t.task_config)
    attrs = read_case_attributes(t.ingest_dir / "metadata.csv")
    by_site = subgroup_analysis(result.cases, attrs, metric="psnr", by="site", bootstrap=50)
    means = {g.value: g.mean for g in by_site.groups}
    assert means["site-A"] > means["site-B"] > means["site-C"]
    assert by_site.best == "site-A" and by_site.worst == "site-C"
    by_vendor = subgroup_analysis(
        result.cases, attrs, metric="psnr", by="manufacturer", bootstrap=50
    )
    assert by_vendor.worst == lowdose_ct.SITES["site-C"][0]
