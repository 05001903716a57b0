"""Model submissions of tracks scored on the case's grid: dose, image-to-image, detection.

Each test builds a tiny dataset of its own, a challenge whose phases take predictions and
models, and a pointwise ONNX model (a 1x1x1 convolution built with ``onnx.helper``). The
test computes the model's outputs itself with numpy, submits them as a predictions
archive of the track's kind, and checks that the model submission, run by the worker
through sliding windows in its child process, scores the same. SQLite only: the database
plays no part in what these tests check (tests/challenges/test_model_submissions.py and the
track tests run on PostgreSQL too).
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_dose_track import SPEC as DOSE_SPEC
from test_dose_track import _write_world as write_dose_world
from track_helpers import (
    PHASES,
    create_challenge,
    score_all,
    scored_result,
    split_dataset,
    submit_bytes,
)

from medarena.challenges.submissions import SubmissionRefused
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.datasets.dose import attach_dose_references
from medarena.datasets.findings import attach_findings
from medarena.datasets.ingest import ingest

MODEL_PHASES = [{**p, "submission_kinds": ["predictions", "model"]} for p in PHASES]


@pytest.fixture
def cat(tmp_path: Path) -> Any:
    settings = get_settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        secret_key="k" * 48,
    )
    catalogue = open_catalogue(settings)
    yield catalogue
    catalogue.close()


def _pointwise(weights: list[float], bias: float, patch: list[int]) -> bytes:
    """A 1x1x1 convolution to one channel, sum_c weights[c] * x_c + bias, as ONNX."""
    w = np.array(weights, np.float32).reshape(1, len(weights), *([1] * len(patch)))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["output"])],
        "pointwise",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["batch", len(weights), *patch]
            )
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, *patch])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([bias], np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> bytes:
    nib.save(nib.Nifti1Image(arr.astype(np.float32), affine), str(path))
    return path.read_bytes()


def _same_scores(cat: Catalogue, by_predictions: int, by_model: int) -> dict[str, float]:
    sub_p, res_p = scored_result(cat, by_predictions)
    sub_m, res_m = scored_result(cat, by_model)
    assert (sub_m.kind, sub_p.kind) == ("model", "predictions")
    assert sorted(res_m.cases) == sorted(res_p.cases)
    assert set(sub_m.scores) == set(sub_p.scores)
    for k, v in sub_p.scores.items():
        assert sub_m.scores[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    return sub_m.scores


DOSE_MANIFEST = """\
inputs:
  channels: [CT]
  structures: [PTV70, SpinalCord]
  patch_size: [8, 8, 6]
outputs: {kind: image, scale: 70.0}
"""


def test_dose_model_scores_like_its_dose_grids(cat: Catalogue, tmp_path: Path) -> None:
    write_dose_world(tmp_path / "src", tmp_path / "refs")
    ingest(cat, tmp_path / "src", "hn")
    split_dataset(cat, "hn")
    attach_dose_references(cat, "hn", tmp_path / "refs")
    uid, keys = create_challenge(cat, {**DOSE_SPEC, "phases": MODEL_PHASES}, "hn")
    weights, bias = [0.0005, 0.8, 0.1], 0.05
    members: dict[str, bytes | str] = {}
    for key in keys["validation"]:
        ct_img = nib.load(tmp_path / "src" / f"{key}.nii.gz")
        ct = np.asarray(ct_img.dataobj, np.float64)
        ptv, cord = (
            np.asarray(nib.load(tmp_path / "refs" / key / f"{n}.nii.gz").dataobj) > 0
            for n in ("PTV70", "SpinalCord")
        )
        y = weights[0] * ct + weights[1] * ptv + weights[2] * cord + bias
        dose = np.maximum(70.0 * y, 0.0)  # air is negative before the clip at 0 Gy
        members[f"{key}.nii.gz"] = _nifti(dose, ct_img.affine, tmp_path / f"{key}.nii.gz")
    model = _pointwise(weights, bias, [8, 8, 6])
    by_grids = submit_bytes(cat, uid, "kbp", "dose", "val", _zip(members), "doses.zip")
    archive = _zip({"model.onnx": model, "manifest.yaml": DOSE_MANIFEST})
    by_model = submit_bytes(cat, uid, "kbp", "dose", "val", archive, "model.zip")
    hidden = submit_bytes(cat, uid, "kbp", "dose", "test", archive, "model.zip")
    # the model's three input channels must be announced: two structures left out
    short = DOSE_MANIFEST.replace("  structures: [PTV70, SpinalCord]\n", "")
    with pytest.raises(SubmissionRefused, match=r"has 3 channels but manifest inputs.channels"):
        submit_bytes(
            cat,
            uid,
            "kbp",
            "dose",
            "val",
            _zip({"model.onnx": model, "manifest.yaml": short}),
            "m.zip",
        )
    unknown = DOSE_MANIFEST.replace("SpinalCord]", "Brainstem]")
    with pytest.raises(SubmissionRefused, match=r"\['Brainstem'\] are not structures of this"):
        submit_bytes(
            cat,
            uid,
            "kbp",
            "dose",
            "val",
            _zip({"model.onnx": model, "manifest.yaml": unknown}),
            "m.zip",
        )
    assert score_all(cat) == 3
    scores = _same_scores(cat, by_grids, by_model)
    assert scores["dose_score"] > 0
    assert scored_result(cat, hidden)[0].primary_score is not None


def _write_i2i_world(src: Path, n: int = 4) -> dict[str, np.ndarray]:
    """Noisy 8x8x2 images and their (integer) clean targets, in the generic layout."""
    (src / "labels").mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    images = {}
    for i in range(n):
        rng = np.random.default_rng(i)
        clean = np.round(rng.uniform(0, 40, (8, 8, 2))).astype(np.int16)
        noisy = (clean + rng.normal(0, 2, clean.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(noisy, affine), str(src / f"ld{i}.nii.gz"))
        nib.save(nib.Nifti1Image(clean, affine), str(src / "labels" / f"ld{i}.nii.gz"))
        images[f"ld{i}"] = noisy
    return images


I2I_SPEC = {
    "slug": "lowdose",
    "title": "Low dose",
    "rules": "Restore the image.",
    "tracks": [
        {
            "slug": "restore",
            "title": "Restore",
            "task": "image-to-image",
            "task_config": {"data_range": 40.0, "slice_axis": 2},
            "metrics": ["mae", "psnr", "ssim"],
            "primary_metric": "mae",
            "dataset": "ld",
            "split": "s",
        }
    ],
    "phases": MODEL_PHASES,
}
I2I_MANIFEST = """\
inputs:
  channels: [CT]
  normalisation: [{block: scale_range}]
  patch_size: [4, 4, 2]
  overlap: 0.5
outputs: {kind: image, scale: 40.0, offset: 0.0}
"""


def test_image_to_image_model_scores_like_its_images(cat: Catalogue, tmp_path: Path) -> None:
    images = _write_i2i_world(tmp_path / "src")
    ingest(cat, tmp_path / "src", "ld")
    split_dataset(cat, "ld")
    uid, keys = create_challenge(cat, I2I_SPEC, "ld")
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    members: dict[str, bytes | str] = {}
    for key in keys["validation"]:
        img = images[key].astype(np.float64)
        x = (img - img.min()) / (img.max() - img.min())  # scale_range: to [0, 1] per image
        y = 0.9 * x + 0.01
        members[f"{key}.nii.gz"] = _nifti(40.0 * y, affine, tmp_path / f"{key}.nii.gz")
    model = _pointwise([0.9], 0.01, [4, 4, 2])
    by_images = submit_bytes(cat, uid, "lowdose", "restore", "val", _zip(members), "i.zip")
    archive = _zip({"model.onnx": model, "manifest.yaml": I2I_MANIFEST})
    by_model = submit_bytes(cat, uid, "lowdose", "restore", "val", archive, "m.zip")
    hidden = submit_bytes(cat, uid, "lowdose", "restore", "test", archive, "m.zip")
    wrong = I2I_MANIFEST.replace("kind: image, scale: 40.0, offset: 0.0", "kind: heatmap")
    wrong = wrong.replace("{block: scale_range}", "{block: scale_range, params: {a_min: 0}}")
    with pytest.raises(SubmissionRefused) as err:
        submit_bytes(
            cat,
            uid,
            "lowdose",
            "restore",
            "val",
            _zip({"model.onnx": model, "manifest.yaml": wrong}),
            "m.zip",
        )
    assert "this image-to-image track needs 'image'" in str(err.value)
    assert (
        "field inputs.normalisation[0].params.a_min of block 'scale_range': 0: Extra inputs"
        in str(err.value)
    )
    assert score_all(cat) == 3
    scores = _same_scores(cat, by_images, by_model)
    assert 0 < scores["mae"] < 5
    assert scored_result(cat, hidden)[0].primary_score is not None


NODULES = [(4.0, 4.0, 3.0, 4.0), (11.0, 10.0, 4.0, 5.0)]  # voxel = world mm (identity)


def _write_lung_world(src: Path, n: int = 4) -> tuple[dict[str, np.ndarray], Path]:
    """16x16x8 CTs with a bright blob at each nodule, and LUNA16-style annotations."""
    src.mkdir(parents=True)
    grid = np.indices((16, 16, 8), dtype=np.float64)
    images, rows = {}, ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    for i in range(n):
        key = f"lung{i}"
        ct = np.full((16, 16, 8), -800.0) + np.random.default_rng(i).normal(0, 5, (16, 16, 8))
        for x, y, z, d in NODULES:
            d2 = (grid[0] - x) ** 2 + (grid[1] - y) ** 2 + (grid[2] - z) ** 2
            ct += 900.0 * np.exp(-d2 / 2.0)
            rows.append(f"{key},{x},{y},{z},{d}")
        images[key] = ct.astype(np.float32)
        nib.save(nib.Nifti1Image(images[key], np.eye(4)), str(src / f"{key}.nii.gz"))
    annotations = src.parent / "annotations.csv"
    annotations.write_text("\n".join(rows) + "\n")
    return images, annotations


LUNA_SPEC = {
    "slug": "luna",
    "title": "Lung nodules",
    "rules": "Find the nodules.",
    "tracks": [
        {
            "slug": "nodules",
            "title": "Nodules",
            "task": "detection",
            "task_config": {"bootstrap": 20},
            "metrics": ["cpm", "sens@1"],
            "primary_metric": "cpm",
            "dataset": "lung",
            "split": "s",
        }
    ],
    "phases": MODEL_PHASES,
}
DETECTION_MANIFEST = """\
inputs:
  channels: [CT]
  patch_size: [8, 8, 8]
outputs:
  kind: heatmap
  activation: sigmoid
  threshold: 0.1
  min_distance_mm: 3.0
  max_candidates: 10
"""


def test_detection_model_scores_like_its_candidates(cat: Catalogue, tmp_path: Path) -> None:
    from medarena.lab.detection import heatmap_candidates

    images, annotations = _write_lung_world(tmp_path / "src")
    ingest(cat, tmp_path / "src", "lung")
    split_dataset(cat, "lung")
    attach_findings(cat, "lung", annotations)
    uid, keys = create_challenge(cat, LUNA_SPEC, "lung")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id", "x", "y", "z", "probability"])
    for key in keys["validation"]:
        heat = 1.0 / (1.0 + np.exp(-0.01 * images[key].astype(np.float64)))
        found = heatmap_candidates(
            heat, np.eye(4), threshold=0.1, min_distance_mm=3.0, max_candidates=10
        )
        assert len(found) == len(NODULES)
        w.writerows([key, c["x"], c["y"], c["z"], c["probability"]] for c in found)
    model = _pointwise([0.01], 0.0, [8, 8, 8])
    by_csv = submit_bytes(
        cat, uid, "luna", "nodules", "val", _zip({"c.csv": buf.getvalue()}), "c.zip"
    )
    archive = _zip({"model.onnx": model, "manifest.yaml": DETECTION_MANIFEST})
    by_model = submit_bytes(cat, uid, "luna", "nodules", "val", archive, "m.zip")
    hidden = submit_bytes(cat, uid, "luna", "nodules", "test", archive, "m.zip")
    softmax = DETECTION_MANIFEST.replace("activation: sigmoid", "activation: softmax")
    with pytest.raises(SubmissionRefused, match="a heatmap takes 'sigmoid' or 'none'"):
        submit_bytes(
            cat,
            uid,
            "luna",
            "nodules",
            "val",
            _zip({"model.onnx": model, "manifest.yaml": softmax}),
            "m.zip",
        )
    # without the sigmoid the logits are no probabilities: failed with the case and range
    raw = _zip({"model.onnx": model, "manifest.yaml": softmax.replace("softmax", "none")})
    logits = submit_bytes(cat, uid, "luna", "nodules", "val", raw, "m.zip")
    assert score_all(cat) == 4
    scores = _same_scores(cat, by_csv, by_model)
    assert scores["cpm"] == pytest.approx(1.0)  # both nodules found, no false positive
    assert scored_result(cat, hidden)[0].primary_score == pytest.approx(1.0)
    with cat.sessions() as s:
        from medarena.db.platform_models import Submission

        sub = s.get(Submission, logits)
        assert sub is not None and sub.status == "failed"
    assert f"case {keys['validation'][0]}: the heatmap has values in" in str(sub.error)
