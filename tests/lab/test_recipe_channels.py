"""Per-channel intensity normalisation: the ``channels`` parameter of ct_window, zscore and
scale_range (a PET/CT recipe windows the CT channel and scales the PET channel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medarena.lab import RecipeError, load_recipe, parse_recipe
from medarena.lab.pipeline import build_pipelines

TWO = """\
name: petct-tiny
dataset: {name: petct, split: default}
task: {type: segmentation, spatial_dims: 2, num_classes: 2, in_channels: 2}
preprocess:
  - block: ct_window
    params: {a_min: -100, a_max: 300, b_min: 0, b_max: 1, clip: true, channels: [0]}
  - block: PET
network:
  block: unet
  params: {channels: [4, 8], strides: [2], num_res_units: 0}
loss: {block: dice_ce}
trainer: {epochs: 1, batch_size: 1, patch_size: [4, 4]}
"""
SCALE = "block: scale_range\n    params: {minv: 0, maxv: 10, channels: [1]}"
ZSCORE = "block: zscore\n    params: {nonzero: false, channels: [1]}"


def _problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    return [(p.line, p.field, p.message) for p in info.value.problems]


def _line_of(text: str, needle: str) -> int:
    return next(i for i, x in enumerate(text.splitlines(), 1) if needle in x)


def _image() -> MetaTensor:
    ct = np.array([[-500, -100, 0, 100], [300, 1000, 100, -100]] * 2, np.float32)
    pet = np.array([[0, 1, 2, 3], [4, 5, 6, 7]] * 2, np.float32)
    return MetaTensor(torch.from_numpy(np.stack([ct, pet])))


def _cached(text: str) -> np.ndarray:
    recipe = parse_recipe(text)
    out = build_pipelines(recipe).cached({"image": _image(), "label": torch.zeros(1, 4, 4)})
    return np.asarray(out["image"])


def test_each_channel_gets_its_own_block() -> None:
    out = _cached(TWO.replace("block: PET", SCALE))
    # CT: window -100..300 HU -> 0..1 clipped: -500 -> 0, 0 -> 0.25, 100 -> 0.5, 1000 -> 1
    ct_row0 = [0.0, 0.0, 0.25, 0.5]
    ct_row1 = [1.0, 1.0, 0.5, 0.0]
    np.testing.assert_allclose(out[0], [ct_row0, ct_row1] * 2, atol=1e-6)
    # PET alone min-max scaled to 0..10: 0..7 -> 0, 10/7, ...
    pet = np.array([[0, 1, 2, 3], [4, 5, 6, 7]] * 2) * 10 / 7
    np.testing.assert_allclose(out[1], pet, atol=1e-5)


def test_zscore_on_one_channel_leaves_the_window_of_the_other() -> None:
    out = _cached(TWO.replace("block: PET", ZSCORE))
    assert out[0, 0].tolist() == [0.0, 0.0, 0.25, 0.5]
    # PET values 0..7 (each twice): mean 3.5, std (population) sqrt(5.25)
    expect = (np.array([[0, 1, 2, 3], [4, 5, 6, 7]] * 2) - 3.5) / np.sqrt(5.25)
    np.testing.assert_allclose(out[1], expect, atol=1e-5)


def test_without_channels_a_block_normalises_every_channel_as_before() -> None:
    text = TWO.replace(", channels: [0]", "").replace("  - block: PET\n", "")
    out = _cached(text)
    ct_row0 = [0.0, 0.0, 0.25, 0.5]
    np.testing.assert_allclose(out[0, 0], ct_row0, atol=1e-6)
    np.testing.assert_allclose(out[1, 0], [0.25, 0.2525, 0.255, 0.2575], atol=1e-6)


def test_a_channel_out_of_range_is_named_at_its_line() -> None:
    text = TWO.replace("block: PET", SCALE.replace("[1]", "[2]"))
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "channels: [2]")
    assert field == "preprocess[1].params.channels"
    assert "index 2 is out of range; task.in_channels is 2 (valid indices 0..1)" in msg


def test_two_blocks_on_one_channel_are_refused() -> None:
    text = TWO.replace("block: PET", SCALE.replace("[1]", "[1, 0]"))
    [(line, _field, msg)] = _problems(text)
    assert line == _line_of(text, "channels: [1, 0]")
    assert "channel 0 is already normalised by entry 0 (ct_window)" in msg


def test_a_block_without_channels_beside_one_with_channels_is_refused() -> None:
    text = TWO.replace("block: PET", "block: zscore")
    [(line, field, msg)] = _problems(text)
    assert line == _line_of(text, "block: zscore") and field == "preprocess[1].params.channels"
    assert "zscore without channels normalises every channel" in msg


@pytest.mark.parametrize(
    ("value", "rule"), [("[-1]", "greater than or equal to 0"), ("[]", "at least 1")]
)
def test_bad_channel_lists_are_named(value: str, rule: str) -> None:
    text = TWO.replace("block: PET", SCALE.replace("[1]", value))
    problems = _problems(text)
    assert problems and all(p[0] == _line_of(text, f"channels: {value}") for p in problems)
    assert rule in problems[0][2]


def test_a_channel_listed_twice_is_named() -> None:
    text = TWO.replace("block: PET", SCALE.replace("[1]", "[1, 1]"))
    [(_line, _field, msg)] = _problems(text)
    assert "channel 1 is listed twice" in msg


def test_petct_example_recipe_normalises_ct_and_pet_apart() -> None:
    path = Path(__file__).parents[2] / "examples" / "lab" / "petct-lesions-unet.yaml"
    recipe = load_recipe(path)
    assert recipe.task.in_channels == 2 and recipe.dataset.name == "demo-petct"
    chans = [r.params.get("channels") for r in recipe.preprocess[:2]]
    assert chans == [[0], [1]]


def _write_petct(root: Path, n: int = 6, size: int = 12) -> None:
    """MSD layout: channel 0 'CT' in HU (-1000 outside, 40 body, 200 lesion), channel 1
    'PET' (1 body, 8 lesion), label 1 = lesion."""
    import json

    from medarena.imaging.image import Image
    from medarena.imaging.nifti import write_nifti

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "petct", "modality": {"0": "CT"}}))
    yy, xx = np.indices((size, size))
    for i in range(n):
        lesion = (yy - 4 - i % 3) ** 2 + (xx - 5 - i % 4) ** 2 <= 4
        body = (yy - 6) ** 2 + (xx - 6) ** 2 <= 25
        ct = np.where(body, 40.0, -1000.0) + lesion * 160.0
        pet = body * 1.0 + lesion * 7.0
        for c, arr in enumerate((ct, pet)):
            write_nifti(
                Image(arr.astype(np.float32), (1.0, 1.0)),
                root / "imagesTr" / f"p{i}_{c:04d}.nii.gz",
            )
        write_nifti(
            Image(lesion.astype(np.uint8), (1.0, 1.0), kind="label"),
            root / "labelsTr" / f"p{i}.nii.gz",
        )


def test_a_two_channel_recipe_trains_with_per_channel_normalisation(
    lab_catalogue: Any, tmp_path: Path
) -> None:
    from monai.data import MetaTensor as MT

    from medarena.datasets.catalogue import make_split
    from medarena.datasets.ingest import ingest
    from medarena.datasets.splits import SplitSpec
    from medarena.lab.data import load_split
    from medarena.lab.trainer import train

    _write_petct(tmp_path / "src")
    summary = ingest(lab_catalogue, tmp_path / "src", "petct")
    assert summary.cases_added == 6, summary.issues
    spec = SplitSpec(subsets=("train", "validation"), ratios=(0.67, 0.33), group_by=None)
    make_split(lab_catalogue, "petct", spec)
    text = TWO.replace("block: PET", ZSCORE.replace("nonzero: false", "nonzero: true"))
    text = text.replace("a_min: -100, a_max: 300", "a_min: -1000, a_max: 1000")
    recipe = parse_recipe(text.replace("patch_size: [4, 4]", "patch_size: [8, 8]"))
    split = load_split(lab_catalogue, recipe)
    case = split.train[0]
    assert case.image.shape[0] == 2
    out = build_pipelines(recipe).cached({"image": MT(torch.from_numpy(case.image))})["image"]
    ct, pet = case.image
    # CT: -1000..1000 HU -> 0..1; PET: z-score over its non-zero (body) voxels only
    np.testing.assert_allclose(np.asarray(out[0]), (ct + 1000) / 2000, atol=1e-6)
    body = pet > 0
    expect = np.where(body, (pet - pet[body].mean()) / pet[body].std(), 0.0)
    np.testing.assert_allclose(np.asarray(out[1]), expect, atol=1e-5)
    # -1000, 40, 200 HU -> 0, 0.52, 0.6
    np.testing.assert_allclose(np.unique(np.asarray(out[0])), [0.0, 0.52, 0.6], atol=1e-6)
    result = train(recipe, lab_catalogue, tmp_path / "run", export=False, register=False)
    assert result.epochs_done == 1 and result.steps_done >= 1
    assert result.history and all(np.isfinite(v) for v in _numbers(result.history))
    assert all(np.isfinite(v) for v in result.metrics.values())


def _numbers(data: Any) -> list[float]:
    if isinstance(data, dict):
        return [x for v in data.values() for x in _numbers(v)]
    if isinstance(data, list):
        return [x for v in data for x in _numbers(v)]
    return [float(data)] if isinstance(data, int | float) and not isinstance(data, bool) else []


def _info(recipe_yaml: str) -> Any:
    from medarena.lab.registry import ModelInfo

    return ModelInfo(
        "petct-tiny", 1, "segmentation", "petct", "default", "v", {}, "", "", None, None, {},
        {}, [], recipe_yaml,
    )  # fmt: skip


def test_one_click_manifest_carries_each_blocks_channels() -> None:
    import yaml

    from medarena.challenges.models import parse_manifest
    from medarena.challenges.spec import Track
    from medarena.lab.submit import manifest_for

    track = Track.model_validate(
        {"slug": "lesions", "title": "Lesions", "task": "segmentation", "primary_metric": "dice",
         "dataset": "petct", "split": "default"}
    )  # fmt: skip
    text = manifest_for(_info(TWO.replace("block: PET", SCALE)), track)
    norm = yaml.safe_load(text)["inputs"]["normalisation"]
    assert [(n["block"], n["params"]["channels"]) for n in norm] == [
        ("ct_window", [0]),
        ("scale_range", [1]),
    ]
    assert norm[0]["params"]["a_min"] == -100 and norm[1]["params"]["maxv"] == 10
    assert yaml.safe_load(text)["inputs"]["channels"] == ["channel0", "channel1"]
    assert [r.params.get("channels") for r in parse_manifest(text).inputs.normalisation] == [
        [0],
        [1],
    ]
    # without channels nothing new is written (the manifest reads as before)
    plain = manifest_for(
        _info(TWO.replace(", channels: [0]", "").replace("  - block: PET\n", "")), track
    )
    assert "channels" not in yaml.safe_load(plain)["inputs"]["normalisation"][0]["params"]


def test_docs_recipes_parse_and_use_demo_datasets() -> None:
    import re

    text = (Path(__file__).parents[2] / "docs" / "lab.md").read_text(encoding="utf-8")
    recipes = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("name:")]
    assert recipes
    demo = {"demo-glioma", "demo-petct", "demo-lung-nodules", "demo-lowdose-ct"}
    for block in recipes:
        assert parse_recipe(block, "docs/lab.md").dataset.name in demo
