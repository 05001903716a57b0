"""Model submissions: an ONNX model + manifest scored by ONNX Runtime in a real worker.

The challenge is the small brain challenge of conftest.py (its ``grade`` regression track)
with phases that accept models: ``preliminary`` (validation subset) and ``hidden-test``
(the hidden test subset). A tiny torch regressor is exported to ONNX; the test runs it with
onnxruntime itself on the z-scored images, submits those values as a predictions CSV, and
checks the model submission gets exactly the same scores. Bad models are refused at upload
or fail in the worker with a reason naming the case or the field.
"""

from __future__ import annotations

import io
import os
import resource
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data
from sqlalchemy import select
from track_helpers import add_team_member, score_all, scored_result, submit_bytes

from medarena.challenges.data import subset_cases
from medarena.challenges.models import ManifestError, parse_manifest
from medarena.challenges.spec import ChallengeSpec, SpecError, parse_spec
from medarena.challenges.submissions import SubmissionRefused
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import Challenge, Submission
from medarena.imaging.nifti import read_nifti

SLUG = "brain-2025"
SHAPE = (6, 5, 4)
CLASSES = ["0", "1", "2", "3"]
MANIFEST = """\
format: 1
inputs:
  channels: [MR]
  spatial_dims: 3
  orientation: RAS
  normalisation:
    - block: zscore
  size: [6, 5, 4]
outputs:
  kind: value
  names: [grade]
"""


class _Regressor(torch.nn.Module):
    def __init__(
        self, in_channels: int = 1, hidden: int = 4, nan: bool = False, out: int = 1
    ) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(in_channels, hidden, 1)
        self.head = torch.nn.Linear(hidden, out)
        self.nan = nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))
        if self.nan:
            zero = y - y
            y = zero / zero  # 0/0: NaN on every case
        return y


def _export(model: torch.nn.Module, path: Path, in_channels: int = 1) -> bytes:
    torch.manual_seed(0)
    dummy = torch.zeros(1, in_channels, *SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (dummy,),
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


def _setup(cat: Catalogue, spec: ChallengeSpec) -> int:
    data = spec.model_dump(mode="json")
    data["tracks"].append(
        {
            "slug": "grade-class",
            "title": "Grade classification",
            "task": "classification",
            "task_config": {"mode": "multiclass", "label_column": "grade", "class_names": CLASSES},
            "primary_metric": "accuracy",
            "metrics": ["accuracy", "auc"],
            "dataset": "brain",
            "split": "challenge",
        }
    )
    prelim = data["phases"][0]
    prelim.update(submission_kinds=["predictions", "model"], submissions_per_day=None)
    data["phases"].append(
        {
            **prelim,
            "slug": "hidden-test",
            "title": "Hidden test",
            "scored_subset": "test",
            "submission_kinds": ["model"],
            "model_limits": {"max_model_mb": 0.05, "time_per_case_s": 30},
        }
    )
    data["phases"].append(
        {
            **data["phases"][-1],
            "slug": "tight",
            "title": "Tight",
            "model_limits": {"time_per_case_s": 1e-6},
        }
    )
    data["phases"].append(
        {
            **data["phases"][-1],
            "slug": "limited",
            "title": "Limited",
            "model_limits": {"memory_mb": 256, "time_per_case_s": 1.5},
        }
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


def _zscored(cat: Catalogue, subset: str) -> dict[str, np.ndarray]:
    """Each case's image z-scored over its non-zero voxels (the lab's zscore block)."""
    out = {}
    with cat.sessions() as s:
        for c in subset_cases(s, "brain", "challenge", subset):
            (obj,) = [o for o in c.objects if o.role == "image"]
            arr = read_nifti(cat.store.path_of(obj.digest)).array.astype(np.float32)
            nz = arr[arr != 0]
            out[c.case_key] = ((arr - nz.mean()) / nz.std())[None].astype(np.float32)
    return out


def _ort_outputs(model: Path, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return {k: sess.run(None, {"input": x[None]})[0].reshape(-1) for k, x in images.items()}


def _ort_values(model: Path, images: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v[0]) for k, v in _ort_outputs(model, images).items()}


def _submit(
    cat: Catalogue,
    uid: int,
    phase: str,
    data: bytes,
    name: str = "model.zip",
    track: str = "grade",
) -> int:
    return submit_bytes(cat, uid, SLUG, track, phase, data, name)


def test_model_scores_like_predictions_of_its_outputs(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec)
    before = set(catalogue.store.iter_digests())
    torch.manual_seed(0)
    onnx_bytes = _export(_Regressor(), tmp_path / "m.onnx")
    model_zip = _zip({"model.onnx": onnx_bytes, "manifest.yaml": MANIFEST})
    values = _ort_values(tmp_path / "m.onnx", _zscored(catalogue, "validation"))
    csv_text = "case_id,grade\n" + "".join(f"{k},{v!r}\n" for k, v in values.items())
    by_csv = _submit(catalogue, uid, "preliminary", _zip({"preds.csv": csv_text}), "preds.zip")
    by_model = _submit(catalogue, uid, "preliminary", model_zip)
    hidden = _submit(catalogue, uid, "hidden-test", model_zip)
    assert score_all(catalogue) == 3
    sub_csv, res_csv = scored_result(catalogue, by_csv)
    sub_model, res_model = scored_result(catalogue, by_model)
    assert sub_model.scores == sub_csv.scores
    assert (sub_model.kind, sub_csv.kind) == ("model", "predictions")
    assert res_model.cases == res_csv.cases and len(res_model.cases) == len(values) == 2
    # the hidden test subset: scored, the same value as onnxruntime's on those cases
    sub_hidden, _ = scored_result(catalogue, hidden)
    truth = {}
    with catalogue.sessions() as s:
        for c in subset_cases(s, "brain", "challenge", "test"):
            truth[c.case_key] = float(c.labels["grade"])
    want = _ort_values(tmp_path / "m.onnx", _zscored(catalogue, "test"))
    mae = np.mean([abs(want[k] - truth[k]) for k in truth])
    assert sub_hidden.primary_score == pytest.approx(mae, rel=1e-6)
    # the store gained the two archives and the results only: no hidden predictions
    with catalogue.sessions() as s:
        mine = {
            d
            for row in s.execute(select(Submission.archive_digest, Submission.result_digest))
            for d in row
        }
    assert set(catalogue.store.iter_digests()) - before == mine
    assert not list(Path(catalogue.settings.data_dir, "work").rglob("*.csv"))


def test_classifier_scores_like_its_softmax_scores(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec)
    torch.manual_seed(3)
    onnx_bytes = _export(_Regressor(out=4, hidden=8), tmp_path / "c.onnx")
    manifest = MANIFEST.replace("kind: value", "kind: scores\n  activation: softmax").replace(
        "names: [grade]", "names: ['0', '1', '2', '3']"
    )
    logits = _ort_outputs(tmp_path / "c.onnx", _zscored(catalogue, "validation"))
    lines = ["case_id," + ",".join(CLASSES)]
    for k, v in logits.items():
        e = np.exp(v.astype(np.float64) - v.max())
        lines.append(k + "," + ",".join(repr(float(p)) for p in e / e.sum()))
    by_csv = _submit(
        catalogue,
        uid,
        "preliminary",
        _zip({"p.csv": "\n".join(lines) + "\n"}),
        "p.zip",
        "grade-class",
    )
    by_model = _submit(
        catalogue,
        uid,
        "preliminary",
        _zip({"model.onnx": onnx_bytes, "manifest.yaml": manifest}),
        track="grade-class",
    )
    # the regression manifest does not fit a classification track
    with pytest.raises(SubmissionRefused, match="a classification track needs kind 'scores'"):
        _submit(
            catalogue,
            uid,
            "preliminary",
            _zip({"model.onnx": onnx_bytes, "manifest.yaml": MANIFEST}),
            track="grade-class",
        )
    assert score_all(catalogue) == 2
    sub_csv, res_csv = scored_result(catalogue, by_csv)
    sub_model, res_model = scored_result(catalogue, by_model)
    assert sub_model.scores == sub_csv.scores and "accuracy" in sub_model.scores
    assert res_model.cases == res_csv.cases


SEG_MANIFEST = """\
inputs:
  channels: [MR]
  normalisation: [{block: zscore}]
  patch_size: [4, 4, 4]
  overlap: 0.5
outputs: {kind: argmax, names: [tumour]}
"""


def test_segmentation_model_by_sliding_windows_scores_like_its_label_maps(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec)
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():  # channel 1 wins where the z-scored intensity is above 0.5
        conv.weight.copy_(torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -0.5]))
    dummy = torch.zeros(1, 1, 4, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            conv,
            (dummy,),
            str(tmp_path / "s.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}},
            dynamo=False,
        )
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    members: dict[str, bytes | str] = {}
    with catalogue.sessions() as s:
        affines = {
            c.case_key: read_nifti(
                catalogue.store.path_of(next(o.digest for o in c.objects if o.role == "image"))
            ).nifti_affine()
            for c in subset_cases(s, "brain", "challenge", "validation")
        }
    for key, x in _zscored(catalogue, "validation").items():
        padded = np.zeros((1, 8, 8, 4), np.float32)  # 4x4x4 tiles; the model is pointwise
        padded[:, :6, :5, :] = x
        out = np.zeros((2, 8, 8, 4), np.float32)
        for a in (0, 4):
            for b in (0, 4):
                tile = padded[None, :, a : a + 4, b : b + 4, :]
                out[:, a : a + 4, b : b + 4, :] = sess.run(None, {"input": tile})[0][0]
        lab = np.argmax(out[:, :6, :5, :], axis=0).astype(np.uint8)
        buf = tmp_path / f"{key}.nii.gz"
        nib.save(nib.Nifti1Image(lab, affines[key]), str(buf))
        members[f"{key}.nii.gz"] = buf.read_bytes()
    by_maps = _submit(catalogue, uid, "preliminary", _zip(members), "maps.zip", "seg")
    model_zip = _zip(
        {"model.onnx": (tmp_path / "s.onnx").read_bytes(), "manifest.yaml": SEG_MANIFEST}
    )
    by_model = _submit(catalogue, uid, "preliminary", model_zip, track="seg")
    hidden = _submit(catalogue, uid, "hidden-test", model_zip, track="seg")
    assert score_all(catalogue) == 3
    sub_maps, res_maps = scored_result(catalogue, by_maps)
    sub_model, res_model = scored_result(catalogue, by_model)
    assert sub_model.scores == sub_maps.scores and res_model.cases == res_maps.cases
    assert 0 < sub_model.primary_score < 1  # type: ignore[operator]
    assert scored_result(catalogue, hidden)[0].primary_score is not None
    bad = SEG_MANIFEST.replace("names: [tumour]", "names: [tumor]")
    with pytest.raises(SubmissionRefused, match=r"\['tumor'\] are neither the track's structures"):
        _submit(
            catalogue,
            uid,
            "preliminary",
            _zip({"model.onnx": b"x", "manifest.yaml": bad}),
            track="seg",
        )


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


def test_a_lab_run_exported_model_scores_its_validation_mae(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    from medarena.lab.recipe import parse_recipe
    from medarena.lab.trainer import train

    uid = _setup(catalogue, spec)
    result = train(parse_recipe(LAB_RECIPE), catalogue, tmp_path / "run")
    manifest = MANIFEST.replace("size: [6, 5, 4]", "size: [8, 8, 8]")
    onnx_bytes = (tmp_path / "run" / "model.onnx").read_bytes()
    sid = _submit(
        catalogue, uid, "preliminary", _zip({"model.onnx": onnx_bytes, "manifest.yaml": manifest})
    )
    assert score_all(catalogue) == 1
    sub, _ = scored_result(catalogue, sid)
    # the lab validated on the same (validation) cases with the same blocks, in PyTorch
    assert sub.primary_score == pytest.approx(result.metrics["mae"], abs=1e-5)


def test_bad_models_are_refused_or_fail_with_a_reason(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec)
    # two input channels where the manifest (and the track's images) have one
    two = _export(_Regressor(in_channels=2), tmp_path / "two.onnx", in_channels=2)
    with pytest.raises(SubmissionRefused) as err:
        _submit(catalogue, uid, "preliminary", _zip({"model.onnx": two, "manifest.yaml": MANIFEST}))
    assert "has 2 channels but manifest inputs.channels lists 1" in str(err.value)
    # oversized: the hidden-test phase allows 0.05 MB
    big = _export(_Regressor(hidden=20000), tmp_path / "big.onnx")
    with pytest.raises(SubmissionRefused) as err:
        _submit(catalogue, uid, "hidden-test", _zip({"model.onnx": big, "manifest.yaml": MANIFEST}))
    assert "model_limits.max_model_mb of 0.05 MB" in str(err.value)
    # broken manifest: every problem with its line and field
    broken = MANIFEST.replace("block: zscore", "block: zscor").replace("  names: [grade]\n", "")
    good = _export(_Regressor(), tmp_path / "good.onnx")
    with pytest.raises(SubmissionRefused) as err:
        _submit(catalogue, uid, "preliminary", _zip({"model.onnx": good, "manifest.yaml": broken}))
    msg = str(err.value)
    assert "line 7, field inputs.normalisation[0].block: 'zscor'" in msg
    assert "field outputs.names" in msg
    # an operator the CPU provider does not have
    node = helper.make_node("Frobnicate", ["input"], ["output"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, *SHAPE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
    )
    custom = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(SubmissionRefused) as err:
        _submit(
            catalogue,
            uid,
            "preliminary",
            _zip({"model.onnx": custom.SerializeToString(), "manifest.yaml": MANIFEST}),
        )
    assert "ONNX Runtime's CPU provider cannot load the model" in str(err.value)
    assert "Frobnicate" in str(err.value)
    # the hidden phase takes models only
    with pytest.raises(SubmissionRefused, match="accepts only model submissions"):
        _submit(catalogue, uid, "hidden-test", _zip({"preds.csv": "case_id,grade\n"}), "p.zip")
    # NaN outputs: accepted at upload, failed by the worker naming the case
    nan = _export(_Regressor(nan=True), tmp_path / "nan.onnx")
    sid = _submit(
        catalogue, uid, "hidden-test", _zip({"model.onnx": nan, "manifest.yaml": MANIFEST})
    )
    score_all(catalogue)
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "failed"
        first = subset_cases(s, "brain", "challenge", "test")[0].case_key
    assert sub.error is not None
    # on a hidden case the reason names the rule, not the output values
    assert f"case {first} (hidden subset): the model's output holds NaN" in sub.error
    assert "(nan)" not in sub.error
    # two outputs for a one-column track; and a time limit no model can meet
    two_out = _export(_Regressor(out=2), tmp_path / "o2.onnx")
    wrong = _submit(
        catalogue, uid, "preliminary", _zip({"model.onnx": two_out, "manifest.yaml": MANIFEST})
    )
    slow = _submit(catalogue, uid, "tight", _zip({"model.onnx": good, "manifest.yaml": MANIFEST}))
    score_all(catalogue)
    with catalogue.sessions() as s:
        errors = {i: s.get(Submission, i).error for i in (wrong, slow)}  # type: ignore[union-attr]
        val = subset_cases(s, "brain", "challenge", "validation")[0].case_key
    assert f"case {val}: output shape [1, 2]" in str(errors[wrong])
    assert "need 1 value(s) per case" in str(errors[wrong])
    assert f"model exceeded the time limit of 1e-06 s on case {first}" in str(errors[slow])
    assert "model_limits.time_per_case_s; the inference process was stopped" in str(errors[slow])


def _graph_model(nodes: list[Any], initializers: list[Any], output_shape: list[Any]) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, *SHAPE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def _memory_hog() -> bytes:
    """Expands the input's mean to 1 x 1 x 4096 x 4096 x 64 floats (4 GiB), then sums."""
    return _graph_model(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=1),
            helper.make_node("Expand", ["mean", "huge"], ["big"]),
            helper.make_node("ReduceSum", ["big", "axes"], ["output"], keepdims=0),
        ],
        [
            numpy_helper.from_array(np.array([1, 1, 4096, 4096, 64], np.int64), "huge"),
            numpy_helper.from_array(np.array([2, 3, 4], np.int64), "axes"),
        ],
        [1, 1],
    )


def _folded_hog() -> bytes:
    """A ConstantOfShape of 2^28 floats (1 GiB) added to the input's mean: constant
    folding would compute it while a session is created."""
    return _graph_model(
        [
            helper.make_node(
                "ConstantOfShape",
                ["count"],
                ["big"],
                value=numpy_helper.from_array(np.array([1.0], np.float32)),
            ),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[2, 3, 4], keepdims=0),
            helper.make_node("Add", ["mean", "total"], ["output"]),
        ],
        [numpy_helper.from_array(np.array([1 << 28], np.int64), "count")],
        ["batch", 1],
    )


def _endless() -> bytes:
    """A Loop of 10^12 identity steps, then the spatial mean: never ends in time."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["carried_in"], ["carried_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, None),
        ],
    )
    return _graph_model(
        [
            helper.make_node("Loop", ["trips", "", "input"], ["looped"], body=body),
            helper.make_node("ReduceMean", ["looped"], ["output"], axes=[2, 3, 4], keepdims=0),
        ],
        [numpy_helper.from_array(np.array(10**12, np.int64), "trips")],
        ["batch", 1],
    )


def test_limits_are_enforced_during_inference_in_a_child_process(
    catalogue: Catalogue, spec: ChallengeSpec
) -> None:
    uid = _setup(catalogue, spec)
    started = time.monotonic()
    children_file = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = set(children_file.read_text().split())  # e.g. servers of other tests' fixtures
    # the upload's checks load the model without constant folding: no 1 GiB tensor here
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    folded = _submit(
        catalogue, uid, "limited", _zip({"model.onnx": _folded_hog(), "manifest.yaml": MANIFEST})
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 * 1024  # kB
    hog = _submit(
        catalogue, uid, "limited", _zip({"model.onnx": _memory_hog(), "manifest.yaml": MANIFEST})
    )
    endless = _submit(
        catalogue, uid, "limited", _zip({"model.onnx": _endless(), "manifest.yaml": MANIFEST})
    )
    assert score_all(catalogue) == 3
    with catalogue.sessions() as s:
        errors = {i: s.get(Submission, i).error for i in (hog, endless, folded)}  # type: ignore[union-attr]
        first = subset_cases(s, "brain", "challenge", "test")[0].case_key
    # the 4 GiB tensor is refused by the child's address-space cap, not allocated
    assert f"model exceeded the memory limit of 256 MB on case {first}" in str(errors[hog])
    assert f"model exceeded the time limit of 1.5 s on case {first}" in str(errors[endless])
    assert "model exceeded the memory limit of 256 MB" in str(errors[folded]), errors[folded]
    # the endless loop was killed at its deadline: the whole run stays well under a minute
    assert time.monotonic() - started < 30
    # no child is left behind
    assert set(children_file.read_text().split()) <= before


def test_the_model_process_has_no_network_and_no_credentials(tmp_path: Path) -> None:
    from medarena.challenges.model_sandbox import ModelProcess

    model = tmp_path / "m.onnx"
    model.write_bytes(
        _graph_model(
            [helper.make_node("Identity", ["input"], ["output"])], [], ["batch", 1, *SHAPE]
        )
    )
    os.environ["MEDARENA_DATABASE_URL"] = "postgresql://secret@db/x"
    try:
        proc = ModelProcess(model, 256, tmp_path, 60)
    finally:
        del os.environ["MEDARENA_DATABASE_URL"]
    try:
        env = Path(f"/proc/{proc.proc.pid}/environ").read_bytes().split(b"\0")
        assert not [e for e in env if e.startswith(b"MEDARENA")]
        assert proc.network == "isolated"  # a network namespace of its own (root here)
        own = os.readlink(f"/proc/{proc.proc.pid}/ns/net")
        assert own != os.readlink("/proc/self/ns/net")
        x = np.arange(120, dtype=np.float32).reshape(1, 1, *SHAPE)
        assert np.array_equal(proc.run(x, time.monotonic() + 30), x)
    finally:
        proc.close()


def test_phase_submission_kinds_validated_with_the_field(spec_yaml: str) -> None:
    bad = spec_yaml.replace(
        "    submissions_per_day: 3\n",
        "    submissions_per_day: 3\n    submission_kinds: [weights]\n",
    )
    with pytest.raises(SpecError) as err:
        parse_spec(bad)
    assert "field phases[0].submission_kinds[0]: Input should be 'predictions' or 'model'" in str(
        err.value
    )
    with pytest.raises(ManifestError) as merr:
        parse_manifest("inputs: {channels: [MR], size: [6, 5, 4], spacing: fine}\n")
    text = str(merr.value)
    assert "line 1, field inputs.spacing: 'fine'" in text and "field outputs" in text


class _Leaky(torch.nn.Module):
    """A model that writes statistics of its (hidden) input into its outputs beside a NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = torch.stack([x.mean(), x.std(), x.amax(), x.amin()]).reshape(1, 4)
        nan = (stats[:, :1] - stats[:, :1]) / (stats[:, :1] - stats[:, :1])
        return torch.cat([nan, stats[:, :3]], dim=1)


def test_reasons_on_hidden_cases_carry_no_values_computed_from_them(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    """A failing model's reason is a channel back to the team: on hidden cases it names
    the rule only. The same model on public cases still gets the full reason."""
    uid = _setup(catalogue, spec)
    leaky = _export(_Leaky(), tmp_path / "leaky.onnx")
    manifest = MANIFEST.replace("kind: value", "kind: scores\n  activation: softmax").replace(
        "names: [grade]", "names: ['0', '1', '2', '3']"
    )
    archive = _zip({"model.onnx": leaky, "manifest.yaml": manifest})
    public = _submit(catalogue, uid, "preliminary", archive, track="grade-class")
    hidden = _submit(catalogue, uid, "hidden-test", archive, track="grade-class")
    score_all(catalogue)
    with catalogue.sessions() as s:
        errors = {i: s.get(Submission, i).error for i in (public, hidden)}  # type: ignore[union-attr]
        val = subset_cases(s, "brain", "challenge", "validation")[0]
        test = subset_cases(s, "brain", "challenge", "test")[0]
    images = _zscored(catalogue, "test")
    top = float(images[test.case_key].max())  # z-scored: mean 0, std 1, max case-specific
    assert f"case {val.case_key}: the model's output is not finite (nan, " in str(errors[public])
    hidden_error = str(errors[hidden])
    assert f"case {test.case_key} (hidden subset): the model's output holds NaN" in hidden_error
    assert "not shown" in hidden_error and "nan," not in hidden_error
    # the hidden image's maximum, quoted before this fix, is not in it
    assert f"{top:.3f}"[:-1] not in hidden_error.replace(test.case_key, "")


def test_a_model_with_external_data_is_refused_at_upload(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    """External data would make ONNX Runtime read a file named by the model (it refuses
    absolute paths and '..', not the archive's own files): one self-contained file only."""
    uid = _setup(catalogue, spec)
    proto = onnx.load_from_string(_export(_Regressor(), tmp_path / "r.onnx"))
    weight = proto.graph.initializer[0]
    set_external_data(weight, location="manifest.yaml", offset=0, length=16)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    archive = _zip({"model.onnx": proto.SerializeToString(), "manifest.yaml": MANIFEST})
    with pytest.raises(SubmissionRefused) as err:
        _submit(catalogue, uid, "preliminary", archive)
    problems = " ".join(getattr(err.value, "problems", ())) + str(err.value)
    assert f"tensor {weight.name!r} keeps its data in an external file ('manifest.yaml')" in (
        problems
    )
    with catalogue.sessions() as s:
        assert not s.scalars(select(Submission)).all()  # nothing stored
