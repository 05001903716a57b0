"""Glioma demo generator: exact BraTS 2023 labels, four contrasts, ingest, BraTS scorers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gen_ingest_checks import (
    assert_metadata_arrived,
    assert_same_bytes,
    ingest_track,
    metadata,
)
from scipy import ndimage as ndi

from medarena.demo.generators import glioma
from medarena.demo.generators.common import GeneratedTrack
from medarena.errors import InputError
from medarena.evaluation.tasks import score_image_case


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return glioma.generate(
        tmp_path_factory.mktemp("glioma"), n_train=4, n_test=2, seed=3, size="tiny"
    )


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_label_volumes_match_the_inserted_lesions(track: GeneratedTrack) -> None:
    spacing = track.notes["spacing_mm"]
    for cid in (*track.train_ids, *track.test_ids):
        sub = "labelsTr" if cid in track.train_ids else "labelsTs"
        lab = _load(track.ingest_dir / sub / f"{cid}.nii.gz")
        assert set(np.unique(lab)) <= {0, 1, 2, 3}
        recorded = track.notes["cases"][cid]
        for value, name in ((1, "NCR"), (2, "ED"), (3, "ET")):
            assert recorded["volume_ml"][name] == pytest.approx(
                (lab == value).sum() * spacing**3 / 1000.0, abs=1e-3
            )
        # every lesion has an enhancing rim and oedema
        assert (lab == 3).sum() > 0 and (lab == 2).sum() > 0
        n_et = ndi.label(lab == 3, structure=np.ones((3, 3, 3)))[1]
        assert n_et >= 1
        assert n_et <= recorded["lesions"] * 2  # a rim may be cut by the parenchyma mask


def test_some_cases_have_two_lesions(tmp_path: Path) -> None:
    t = glioma.generate(tmp_path, n_train=8, n_test=0, seed=1, size="tiny")
    counts = [c["lesions"] for c in t.notes["cases"].values()]
    assert 1 in counts and 2 in counts


def test_contrasts_show_the_tumour_compartments(track: GeneratedTrack) -> None:
    cid = track.train_ids[0]
    lab = _load(track.ingest_dir / "labelsTr" / f"{cid}.nii.gz")
    chans = {
        name: _load(track.ingest_dir / "imagesTr" / f"{cid}_{i:04d}.nii.gz").astype(float)
        for i, name in enumerate(glioma.CHANNELS)
    }
    healthy = (lab == 0) & (chans["T1"] > 500)  # mostly white matter
    # enhancing tumour lights up on T1ce only; oedema on FLAIR; necrosis dark on T1
    assert chans["T1ce"][lab == 3].mean() > 1.3 * chans["T1ce"][healthy].mean()
    assert chans["T1"][lab == 3].mean() < chans["T1ce"][lab == 3].mean() / 1.8
    assert chans["FLAIR"][lab == 2].mean() > 1.5 * chans["FLAIR"][healthy].mean()


def test_brats_scorers_accept_the_labels(track: GeneratedTrack, tmp_path: Path) -> None:
    cfg = dict(track.task_config)
    assert track.task == "brats"
    for cid in track.test_ids:
        ref = track.reference / f"{cid}.nii.gz"
        _, perfect, err = score_image_case("brats", cid, str(ref), str(ref), cfg)
        assert err is None and perfect is not None
        for region in ("WT", "TC", "ET"):
            assert perfect[f"{region}/dice"] == 1.0
            assert perfect[f"{region}/hd95"] == 0.0
            assert perfect[f"{region}/lesion_dice"] == 1.0
            assert perfect[f"{region}/lesion_fp"] == 0
        # perturbed: the enhancing rim relabelled as necrosis and the oedema eroded
        img = nib.load(ref)
        lab = np.asarray(img.dataobj).copy()
        lab[lab == 3] = 1
        ed = lab == 2
        lab[ed & ~ndi.binary_erosion(ed)] = 0
        pred = tmp_path / f"{cid}.nii.gz"
        nib.save(nib.Nifti1Image(lab, img.affine), pred)
        _, worse, err = score_image_case("brats", cid, str(ref), str(pred), cfg)
        assert err is None and worse is not None
        assert worse["ET/dice"] == 0.0 and worse["ET/lesion_dice"] < 1.0
        assert worse["WT/dice"] < 1.0 and worse["WT/hd95"] > 0.0
        assert worse["TC/dice"] == 1.0  # NCR + ET unchanged as a region


def test_same_seed_same_bytes(track: GeneratedTrack, tmp_path: Path) -> None:
    assert_same_bytes(track, glioma.generate(tmp_path, n_train=4, n_test=2, seed=3, size="tiny"))
    other = glioma.generate(tmp_path / "other", n_train=4, n_test=2, seed=4, size="tiny")
    rel = f"data/labelsTr/{track.train_ids[0]}.nii.gz"
    assert (other.root / rel).read_bytes() != (track.root / rel).read_bytes()


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "glioma")
    assert_metadata_arrived(track, records, 4, glioma.SITES.__getitem__)


def test_sites_differ_in_noise(track: GeneratedTrack) -> None:
    """Outside the head the images are pure Rician noise, whose level is the site's."""
    level: dict[str, list[float]] = {}
    for cid, row in metadata(track).items():
        sub = "imagesTr" if cid in track.train_ids else "imagesTs"
        t1 = _load(track.ingest_dir / sub / f"{cid}_0000.nii.gz").astype(float)
        faces = np.concatenate([t1[0].ravel(), t1[-1].ravel(), t1[:, 0].ravel(), t1[:, -1].ravel()])
        level.setdefault(row["site"], []).append(float(np.median(faces)))
    mean = {site: float(np.mean(v)) for site, v in level.items()}
    assert mean["site-B"] > mean["site-C"] > mean["site-A"]  # sigma 0.05 > 0.04 > 0.02


def test_refuses_an_output_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(InputError, match="out_dir must be a missing or empty folder"):
        glioma.generate(tmp_path, n_train=1, n_test=0, seed=0, size="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
