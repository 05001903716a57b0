"""A model submission whose manifest normalises two channels differently (``channels`` on
the normalisation blocks) scores exactly like the predictions its outputs make.

A two-channel dataset ("CT" in HU, "PET" in SUV-like units) is ingested beside the small
brain challenge's; a fixed linear ONNX model reads both channels; the test normalises each
channel by hand (CT window, PET z-score over non-zero voxels), runs ONNX Runtime itself,
submits those values as a predictions CSV and checks the model submission gets the same
scores, also on the hidden test subset.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from track_helpers import add_team_member, score_all, scored_result, submit_bytes

from medarena.challenges.data import subset_cases
from medarena.challenges.models import parse_manifest
from medarena.challenges.spec import ChallengeSpec
from medarena.datasets.catalogue import Catalogue, make_split
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.db.platform_models import Challenge
from medarena.imaging.nifti import read_nifti

SLUG = "petct-2025"
SHAPE = (6, 5, 4)
MANIFEST = """\
format: 1
inputs:
  channels: [CT, PET]
  spatial_dims: 3
  normalisation:
    - block: ct_window
      params: {a_min: -100, a_max: 300, b_min: 0, b_max: 1, clip: true, channels: [0]}
    - block: zscore
      params: {nonzero: true, channels: [1]}
  size: [6, 5, 4]
outputs:
  kind: value
  names: [grade]
"""


def _write_petct(root: Path, n: int = 10) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "petct"}))
    rows = ["case_id,grade"]
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        ct = rng.normal(40 + 30 * i, 150, SHAPE).astype(np.float32)  # partly outside the window
        pet = np.zeros(SHAPE, np.float32)
        pet[1:5, 1:4, :] = rng.gamma(2.0, 1.0 + i, (4, 3, 4))
        for c, arr in enumerate((ct, pet)):
            nib.save(nib.Nifti1Image(arr, affine), root / "imagesTr" / f"pc{i:02d}_{c:04d}.nii.gz")
        rows.append(f"pc{i:02d},{i % 4}")
    (root / "grades.csv").write_text("\n".join(rows) + "\n")


def _normalised(cat: Catalogue, subset: str) -> dict[str, np.ndarray]:
    """Each case's channels normalised by hand: CT window -100..300 HU -> 0..1 (clipped),
    PET z-scored over its non-zero voxels."""
    out = {}
    with cat.sessions() as s:
        for c in subset_cases(s, "petct", "challenge", subset):
            objs = sorted((o for o in c.objects if o.role == "image"), key=lambda o: o.name)
            ct, pet = (read_nifti(cat.store.path_of(o.digest)).array for o in objs)
            ct_n = np.clip((ct - -100.0) / 400.0, 0.0, 1.0)
            nz = pet[pet != 0]
            pet_n = np.where(pet != 0, (pet - nz.mean()) / nz.std(), 0.0)
            out[c.case_key] = np.stack([ct_n, pet_n]).astype(np.float32)
    return out


class _TwoChannels(torch.nn.Module):
    """grade = mean(CT) + 0.5 * mean(PET^2): both channels' normalisation shows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ct = x[:, 0].mean(dim=(1, 2, 3))
        pet = (x[:, 1] ** 2).mean(dim=(1, 2, 3))
        return (ct + 0.5 * pet)[:, None]


def _export(path: Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TwoChannels().eval(),
            (torch.zeros(1, 2, *SHAPE),),
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


def _setup(cat: Catalogue, spec: ChallengeSpec, tmp_path: Path) -> int:
    _write_petct(tmp_path / "petct-src")
    summary = ingest(cat, tmp_path / "petct-src", "petct")
    assert summary.cases_added == 10 and not summary.issues
    split = SplitSpec(name="challenge", ratios=(0.6, 0.2, 0.2), group_by=None, hidden=("test",))
    make_split(cat, "petct", split)
    data = spec.model_dump(mode="json")
    data["slug"] = SLUG
    data["tracks"] = [{**t, "dataset": "petct"} for t in data["tracks"] if t["slug"] == "grade"]
    prelim = data["phases"][0]
    prelim.update(submission_kinds=["predictions", "model"], submissions_per_day=None)
    data["phases"] = [
        prelim,
        {**prelim, "slug": "hidden-test", "title": "Hidden test", "scored_subset": "test",
         "submission_kinds": ["model"]},
    ]  # fmt: skip
    with cat.sessions() as s, s.begin():
        ch = Challenge(
            slug=SLUG,
            title="PET/CT",
            spec=ChallengeSpec.model_validate(data).model_dump(mode="json"),
        )
        s.add(ch)
        s.flush()
        return add_team_member(s, ch, "pet@example.org", "pet-team")


def _values(model: Path, images: dict[str, np.ndarray]) -> dict[str, float]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return {
        k: float(sess.run(None, {"input": x[None]})[0].reshape(-1)[0]) for k, x in images.items()
    }


def test_per_channel_normalisation_model_scores_like_its_predictions(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path
) -> None:
    uid = _setup(catalogue, spec, tmp_path)
    model_zip = _zip({"model.onnx": _export(tmp_path / "m.onnx"), "manifest.yaml": MANIFEST})
    values = _values(tmp_path / "m.onnx", _normalised(catalogue, "validation"))
    csv_text = "case_id,grade\n" + "".join(f"{k},{v!r}\n" for k, v in values.items())

    def submit(phase: str, data: bytes, name: str) -> int:
        return submit_bytes(catalogue, uid, SLUG, "grade", phase, data, name)

    by_csv = submit("preliminary", _zip({"preds.csv": csv_text}), "preds.zip")
    by_model = submit("preliminary", model_zip, "model.zip")
    hidden = submit("hidden-test", model_zip, "model.zip")
    assert score_all(catalogue) == 3
    sub_csv, res_csv = scored_result(catalogue, by_csv)
    sub_model, res_model = scored_result(catalogue, by_model)
    assert sub_model.scores == sub_csv.scores and res_model.cases == res_csv.cases
    assert len(res_model.cases) == len(values) == 2
    truth = {}
    with catalogue.sessions() as s:
        for c in subset_cases(s, "petct", "challenge", "test"):
            truth[c.case_key] = float(c.labels["grade"])
    want = _values(tmp_path / "m.onnx", _normalised(catalogue, "test"))
    mae = np.mean([abs(want[k] - truth[k]) for k in truth])
    assert scored_result(catalogue, hidden)[0].primary_score == pytest.approx(mae, rel=1e-6)
    # the same model normalising every channel alike scores otherwise (channels matter)
    plain = MANIFEST.replace(", channels: [0]", "").replace(
        "    - block: zscore\n      params: {nonzero: true, channels: [1]}\n", ""
    )
    assert "channels" not in parse_manifest(plain).inputs.normalisation[0].params
    other = submit("preliminary", _zip({"model.onnx": (tmp_path / "m.onnx").read_bytes(),
                                         "manifest.yaml": plain}), "model.zip")  # fmt: skip
    assert score_all(catalogue) == 1
    assert scored_result(catalogue, other)[0].scores != sub_csv.scores


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (
            ("channels: [1]}", "channels: [2]}"),
            "field inputs.normalisation[1].params.channels: channels [2]: index 2 is out of "
            "range; inputs.channels is 2 (valid indices 0..1)",
        ),
        (
            ("channels: [1]}", "channels: [1, 0]}"),
            "field inputs.normalisation[1].params.channels: channels [1, 0]: channel 0 is "
            "already normalised by entry 0 (ct_window)",
        ),
        (
            ("channels: [1]}", "channels: [-1]}"),
            "field inputs.normalisation[1].params.channels[0] of block 'zscore': -1: Input should "
            "be greater than or equal to 0",
        ),
    ],
    ids=["out-of-range", "overlap", "negative"],
)
def test_bad_channels_are_refused_at_upload(
    catalogue: Catalogue, spec: ChallengeSpec, tmp_path: Path, change: tuple[str, str], rule: str
) -> None:
    from medarena.challenges.submissions import SubmissionRefused

    uid = _setup(catalogue, spec, tmp_path)
    before = set(catalogue.store.iter_digests())
    manifest = MANIFEST.replace(*change)
    archive = _zip({"model.onnx": _export(tmp_path / "m.onnx"), "manifest.yaml": manifest})
    with pytest.raises(SubmissionRefused) as info:
        submit_bytes(catalogue, uid, SLUG, "grade", "preliminary", archive, "model.zip")
    assert rule in str(info.value)
    assert set(catalogue.store.iter_digests()) == before
