"""Explanations of model submissions: computed by a real worker after scoring, stored for
the public cases only, found by the viewer; a failure never touches the scores.

The small brain challenge of conftest.py (split ``challenge``: validation public, test
hidden) with a ``preliminary`` phase on the validation subset and a ``hidden-test`` phase
on the hidden one, both accepting models. Models are tiny torch networks exported to ONNX.
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from sqlalchemy import select
from track_helpers import add_team_member, scored_result, submit_bytes

from medarena.challenges import explanations
from medarena.challenges import scoring as scoring_mod
from medarena.challenges.data import subset_cases
from medarena.challenges.explanations import (
    EXPLAIN_JOB_KIND,
    case_explanation,
    explanation_index,
)
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.viewer import render_layer
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import Challenge, Job, Submission, User
from medarena.errors import NotFoundError
from medarena.imaging.nifti import read_nifti
from medarena.jobs import Worker

# the job's lookup (JSON results) runs on both backends in the first test; the others
# exercise the methods, which do not depend on the database
SQLITE_ONLY = pytest.mark.parametrize("catalogue", ["sqlite"], indirect=True)
SLUG = "brain-2025"
SHAPE = (6, 5, 4)
CLASSES = ["0", "1", "2", "3"]
SEG_MANIFEST = """\
inputs:
  channels: [MR]
  normalisation: [{block: zscore}]
  patch_size: [4, 4, 4]
  overlap: 0.5
outputs: {kind: argmax, names: [tumour]}
"""
CLASS_MANIFEST = """\
inputs:
  channels: [MR]
  orientation: RAS
  normalisation: [{block: zscore}]
  size: [6, 5, 4]
outputs: {kind: scores, activation: softmax, names: ['0', '1', '2', '3']}
"""


def _setup(cat: Catalogue, spec: ChallengeSpec) -> int:
    data = spec.model_dump(mode="json")
    data["tracks"].append(
        {
            "slug": "grade-class",
            "title": "Grade classification",
            "task": "classification",
            "task_config": {"mode": "multiclass", "label_column": "grade", "class_names": CLASSES},
            "primary_metric": "accuracy",
            "metrics": ["accuracy"],
            "dataset": "brain",
            "split": "challenge",
        }
    )
    prelim = data["phases"][0]
    prelim.update(submission_kinds=["predictions", "model"], submissions_per_day=None)
    data["phases"].append(
        {**prelim, "slug": "hidden-test", "title": "Hidden test", "scored_subset": "test"}
    )
    with cat.sessions() as s, s.begin():
        ch = Challenge(
            slug=SLUG,
            title=spec.title,
            spec=ChallengeSpec.model_validate(data).model_dump(mode="json"),
        )
        s.add(ch)
        s.flush()
        return add_team_member(s, ch, "ada@example.org", "ada-team")


def _onnx(model: torch.nn.Module, shape: tuple[int, ...], path: Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, 1, *shape),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path.read_bytes()


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _run(cat: Catalogue, explain: bool = True) -> int:
    handlers = dict(scoring_mod.HANDLERS)
    if explain:
        handlers.update(explanations.HANDLERS)
    return Worker(cat.sessions, handlers, settings=cat.settings).run_until_idle()


def _zscored(cat: Catalogue, subset: str) -> dict[str, np.ndarray]:
    out = {}
    with cat.sessions() as s:
        for c in subset_cases(s, "brain", "challenge", subset):
            (obj,) = [o for o in c.objects if o.role == "image"]
            arr = read_nifti(cat.store.path_of(obj.digest)).array.astype(np.float32)
            nz = arr[arr != 0]
            out[c.case_key] = (arr - nz.mean()) / nz.std()
    return out


def _maps(cat: Catalogue, digest: str) -> np.ndarray:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(cat.store.get_bytes(digest)))
    assert img.get_data_dtype() == np.uint8  # compact: one byte a voxel
    return np.asarray(img.get_fdata())


def _sub(cat: Catalogue, sid: int) -> Submission:
    with cat.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None
        s.expunge(sub)
        return sub


def _explain_jobs(cat: Catalogue) -> dict[str, Job]:
    with cat.sessions() as s:
        jobs = s.scalars(select(Job).where(Job.kind == EXPLAIN_JOB_KIND)).all()
        for j in jobs:
            s.expunge(j)
    return {str(j.dedupe_key): j for j in jobs}


def test_segmentation_probability_maps_stored_for_public_cases_only(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec)
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():  # channel 1's logit is z - 0.5: p(tumour) = sigmoid(z - 0.5)
        conv.weight.copy_(torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -0.5]))
    model = _zip(
        {"model.onnx": _onnx(conv, (4, 4, 4), tmp_path / "s.onnx"), "manifest.yaml": SEG_MANIFEST}
    )
    before = set(catalogue.store.iter_digests())
    public = submit_bytes(catalogue, uid, SLUG, "seg", "preliminary", model, "m.zip")
    hidden = submit_bytes(catalogue, uid, SLUG, "seg", "hidden-test", model, "m.zip")
    assert _run(catalogue) == 3  # two scorings, one explanation (none for the hidden subset)
    scored_result(catalogue, public)
    scored_result(catalogue, hidden)
    jobs = _explain_jobs(catalogue)
    assert list(jobs) == [f"{public}:1"] and jobs[f"{public}:1"].state == "done"
    sub = _sub(catalogue, public)
    with catalogue.sessions() as s:
        index = explanation_index(s, catalogue.store, sub)
        assert index is not None and index["method"] == "probability" and not index["failed"]
        z = _zscored(catalogue, "validation")
        assert sorted(index["cases"]) == sorted(z) and len(z) == 2
        for key, zs in z.items():
            exp = case_explanation(s, catalogue.store, sub, key)
            assert exp is not None and exp.maps == ("tumour",) and exp.method == "probability"
            maps = _maps(catalogue, exp.digest)
            assert maps.shape == (*SHAPE, 1)
            want = 1.0 / (1.0 + np.exp(-(zs.astype(np.float64) - 0.5)))
            np.testing.assert_allclose(maps[..., 0], want, atol=0.5 / 255 + 1e-6)
            # the map's argmax (p >= 0.5) is the predicted label map (z >= 0.5)
            clear = np.abs(zs - 0.5) > 0.02
            np.testing.assert_array_equal((maps[..., 0] >= 0.5)[clear], (zs >= 0.5)[clear])
            # the label map the scoring job scored, stored for the viewer's prediction layer
            assert exp.prediction is not None
            pred = nib.Nifti1Image.from_bytes(
                gzip.decompress(catalogue.store.get_bytes(exp.prediction))
            )
            np.testing.assert_array_equal(np.asarray(pred.dataobj), (zs >= 0.5).astype(np.uint8))
        # the hidden submission: nothing to find, the viewer refuses its cases anyway
        assert explanation_index(s, catalogue.store, _sub(catalogue, hidden)) is None
        hidden_keys = [c.case_key for c in subset_cases(s, "brain", "challenge", "test")]
        user = s.get(User, uid)
        assert user is not None
        png = render_layer(
            s,
            catalogue.store,
            sub,
            user,
            key,
            "explanation",
            2,
            1,
            Path(catalogue.settings.data_dir),
        )
        assert png.startswith(b"\x89PNG")
        with pytest.raises(NotFoundError):
            render_layer(
                s,
                catalogue.store,
                _sub(catalogue, hidden),
                user,
                hidden_keys[0],
                "explanation",
                2,
                1,
                Path(catalogue.settings.data_dir),
            )
    # the store gained archives, results, the public cases' maps and the index: no more
    with catalogue.sessions() as s:
        mine = {
            d
            for row in s.execute(select(Submission.archive_digest, Submission.result_digest))
            for d in row
        }
    assert index is not None
    maps_and_index = {e["digest"] for e in index["cases"].values()}
    maps_and_index |= {e["prediction"] for e in index["cases"].values()}
    maps_and_index.add(jobs[f"{public}:1"].result["index_digest"])
    assert set(catalogue.store.iter_digests()) - before == mine | maps_and_index


class _Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 8, 1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


@SQLITE_ONLY
def test_foreign_onnx_classifier_gets_occlusion_maps(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec)
    torch.manual_seed(3)
    onnx_bytes = _onnx(_Classifier(), SHAPE, tmp_path / "c.onnx")
    archive = _zip({"model.onnx": onnx_bytes, "manifest.yaml": CLASS_MANIFEST})
    sid = submit_bytes(catalogue, uid, SLUG, "grade-class", "preliminary", archive, "c.zip")
    assert _run(catalogue) == 2
    scored_result(catalogue, sid)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    with catalogue.sessions() as s:
        sub = _sub(catalogue, sid)
        for key, zs in _zscored(catalogue, "validation").items():
            exp = case_explanation(s, catalogue.store, sub, key)
            assert exp is not None and exp.method == "occlusion"
            assert "not Grad-CAM" in exp.title
            top = int(np.argmax(sess.run(None, {"input": zs[None, None]})[0]))
            assert exp.maps == (CLASSES[top],)  # the class the model scores highest
            maps = _maps(catalogue, exp.digest)
            assert maps.shape == (*SHAPE, 1) and maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6


LAB_RECIPE = """\
name: brain-grade
dataset: {name: brain, split: challenge, target: grade}
task: {type: regression, spatial_dims: 3}
preprocess:
  - block: zscore
network:
  block: densenet
  params: {init_features: 4, growth_rate: 4, block_config: [1, 1]}
loss: {block: l1}
trainer: {epochs: 1, batch_size: 3, patch_size: [8, 8, 8]}
"""
LAB_MANIFEST = """\
inputs:
  channels: [MR]
  orientation: RAS
  normalisation: [{block: zscore}]
  size: [8, 8, 8]
outputs: {kind: value, names: [grade]}
"""


@SQLITE_ONLY
def test_lab_model_submission_gets_grad_cam_from_its_registry_weights(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medarena.challenges.explanations import _back_to_case_grid
    from medarena.challenges.models import _preprocess, parse_manifest
    from medarena.lab.explain import grad_cam, registry_network
    from medarena.lab.recipe import parse_recipe
    from medarena.lab.registry import get_model
    from medarena.lab.trainer import train

    uid = _setup(catalogue, spec)
    train(parse_recipe(LAB_RECIPE), catalogue, tmp_path / "run")
    info = get_model(catalogue, "brain-grade")
    assert info.onnx_digest is not None
    archive = _zip(
        {"model.onnx": catalogue.store.get_bytes(info.onnx_digest), "manifest.yaml": LAB_MANIFEST}
    )
    sid = submit_bytes(catalogue, uid, SLUG, "grade", "preliminary", archive, "lab.zip")
    assert _run(catalogue) == 2
    net = registry_network(catalogue.store, info.recipe_yaml, info.weights_digest)
    manifest = parse_manifest(LAB_MANIFEST)
    with catalogue.sessions() as s:
        sub = _sub(catalogue, sid)
        for c in subset_cases(s, "brain", "challenge", "validation"):
            exp = case_explanation(s, catalogue.store, sub, c.case_key)
            assert exp is not None and exp.method == "gradcam" and exp.maps == ("grade",)
            img = read_nifti(catalogue.store.path_of(c.objects[0].digest))
            image = img.array.astype(np.float32)[None]
            x = torch.from_numpy(_preprocess(image, img.nifti_affine(), manifest)[None])
            heat = grad_cam(net, x, class_index=0)[0]
            want = _back_to_case_grid(heat[None], SHAPE, img.nifti_affine(), "RAS")[0]
            stored = _maps(catalogue, exp.digest)[..., 0]
            assert stored.max() == pytest.approx(1.0, abs=1e-6)  # scaled: the peak is 1
            np.testing.assert_allclose(stored, want, atol=0.51 / 255)
    # the same model explained on the command line, on the recipe's preprocessed grid
    from typer.testing import CliRunner

    from medarena.cli.main import app

    monkeypatch.setenv("MEDARENA_DATA_DIR", str(catalogue.settings.data_dir))
    monkeypatch.setenv(
        "MEDARENA_DATABASE_URL", catalogue.engine.url.render_as_string(hide_password=False)
    )
    monkeypatch.setenv("MEDARENA_SECRET_KEY", "k" * 48)
    out = tmp_path / "cam.nii.gz"
    args = ["lab", "explain", "brain-grade:1", "--case", c.case_key, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Grad-CAM" in result.output and "maps: grade" in result.output
    cam = nib.load(out)
    assert cam.shape == (8, 8, 8, 1) and cam.get_data_dtype() == np.uint8
    assert float(np.asarray(cam.dataobj).max()) == pytest.approx(1.0, abs=1e-6)
    x = torch.from_numpy(_preprocess(image, img.nifti_affine(), parse_manifest(LAB_MANIFEST))[None])
    np.testing.assert_allclose(
        np.asarray(cam.dataobj)[..., 0], grad_cam(net, x, class_index=0)[0], atol=0.51 / 255
    )
    with catalogue.sessions() as s:
        hidden_key = subset_cases(s, "brain", "challenge", "test")[0].case_key
    refused = CliRunner().invoke(app, [*args[:4], hidden_key, "--out", str(out)])
    assert refused.exit_code != 0 and "hidden subset" in refused.output
    missing = CliRunner().invoke(app, [*args[:4], "nope", "--out", str(out)])
    assert missing.exit_code != 0 and "no case 'nope' in dataset 'brain'" in missing.output


@SQLITE_ONLY
def test_explanation_failures_never_fail_scoring(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = _setup(catalogue, spec)
    torch.manual_seed(3)
    archive = _zip(
        {
            "model.onnx": _onnx(_Classifier(), SHAPE, tmp_path / "c.onnx"),
            "manifest.yaml": CLASS_MANIFEST,
        }
    )

    # 1. the explanation job cannot even be queued: the submission is scored all the same
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(explanations, "enqueue", broken)
    first = submit_bytes(catalogue, uid, SLUG, "grade-class", "preliminary", archive, "a.zip")
    assert _run(catalogue) == 1
    assert scored_result(catalogue, first)[0].primary_score is not None
    assert not _explain_jobs(catalogue)
    monkeypatch.undo()
    # 2. the job fails on its input (the archive is gone from the store): it records why,
    # ends done, and the viewer finds no explanation; the submission stays scored
    second = submit_bytes(catalogue, uid, SLUG, "grade-class", "preliminary", archive, "b.zip")
    assert _run(catalogue, explain=False) == 1
    sub = _sub(catalogue, second)
    assert sub.status == "scored"
    catalogue.store.delete(sub.archive_digest)
    assert _run(catalogue) == 1
    (job,) = _explain_jobs(catalogue).values()
    assert job.state == "done"
    index = json.loads(catalogue.store.get_bytes(job.result["index_digest"]))
    assert index["error"] and not index["cases"]
    with catalogue.sessions() as s:
        key = subset_cases(s, "brain", "challenge", "validation")[0].case_key
        assert case_explanation(s, catalogue.store, sub, key) is None
    assert _sub(catalogue, second).status == "scored"
