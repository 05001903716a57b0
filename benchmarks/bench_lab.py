"""Benchmark: the lab trainer's step time against a hand-written MONAI loop; ONNX vs PyTorch.

1. Training-step overhead. The same 3D data (N generated cases of S^3, a bright ball on
   noise, ingested into a catalogue for the trainer and kept as arrays for the loop), the
   same network (MONAI UNet, channels 8/16/32), loss (DiceCE), optimiser (Adam), batch size,
   per-step transforms (pad + random crop to the patch, random flips) and seed. The
   trainer runs ``medarena.lab.trainer.train``; the baseline is the usual MONAI loop
   written by hand (Compose per sample, stack, forward, loss, backward, step). Step time
   is taken between consecutive steps inside an epoch (the trainer's progress callback,
   the loop's own clock), so loading, validation and checkpoints are left out. Runs
   alternate and the best median of each side is kept (shared, noisy machine).
2. 3D sliding-window inference on one case (CPU): ``sliding_window_inference`` of the
   trained UNet through PyTorch and through ONNX Runtime (the lab's export), best of R.

Run: ``.venv/bin/python benchmarks/bench_lab.py [--cases 8] [--size 48] [--patch 32]
[--epochs 3] [--repeats 3] [--case-size 128] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medarena.config import get_settings
from medarena.datasets.catalogue import case_records, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.imaging.image import Image
from medarena.imaging.nifti import write_nifti
from medarena.lab import parse_recipe
from medarena.lab.trainer import Progress, train

RECIPE = """\
name: bench-unet
dataset: {{name: balls, split: default}}
task: {{type: segmentation, spatial_dims: 3, num_classes: 2}}
preprocess: [{{block: zscore}}]
augment: [{{block: flip}}]
network:
  block: unet
  params: {{channels: [8, 16, 32], strides: [2, 2], num_res_units: 1}}
loss: {{block: dice_ce}}
optimizer: {{block: adam, params: {{lr: 0.001}}}}
trainer:
  epochs: {epochs}
  batch_size: 2
  patch_size: [{p}, {p}, {p}]
  val_every: {epochs}
  checkpoint_every: {epochs}
  seed: 0
export: {{onnx: false}}
"""


def _ball_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices((size,) * 3).astype(np.float32)
    centre = rng.uniform(size * 0.3, size * 0.7, 3).reshape(3, 1, 1, 1)
    mask = np.sqrt(((grid - centre) ** 2).sum(0)) <= rng.uniform(size * 0.1, size * 0.3)
    image = rng.normal(0, 0.3, mask.shape).astype(np.float32) + mask.astype(np.float32)
    return image, mask.astype(np.uint8)


def _make_data(root: Path, n: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cases = []
    for i in range(n):
        image, mask = _ball_case(rng, size)
        write_nifti(Image(image, (1.0, 1.0, 1.0)), root / "images" / f"b{i:02d}.nii.gz")
        write_nifti(
            Image(mask, (1.0, 1.0, 1.0), kind="label"), root / "labels" / f"b{i:02d}.nii.gz"
        )
        cases.append((image, mask))
    return cases


def _step_times(stamps: list[float], steps_per_epoch: int) -> list[float]:
    """Differences between consecutive steps of the same epoch."""
    out = []
    for e in range(len(stamps) // steps_per_epoch):
        chunk = stamps[e * steps_per_epoch : (e + 1) * steps_per_epoch]
        out += [b - a for a, b in itertools.pairwise(chunk)]
    return out


def _trainer_run(cat: Any, text: str, out: Path, steps: int) -> float:
    stamps: list[float] = []

    def record(p: Progress) -> None:
        if not p.validated:  # one report per training step
            stamps.append(time.perf_counter())

    train(parse_recipe(text), cat, out, progress=record, export=False, register=False)
    return statistics.median(_step_times(stamps, steps))


def _loop_run(train_cases: list[tuple[np.ndarray, np.ndarray]], patch: int, epochs: int) -> float:
    from monai.data import MetaTensor
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        NormalizeIntensityd,
        RandFlipd,
        RandSpatialCropd,
        SpatialPadd,
    )

    keys = ("image", "label")
    norm = NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)
    cached = [
        norm({"image": MetaTensor(img[None]), "label": MetaTensor(lab[None].astype(np.float32))})
        for img, lab in train_cases
    ]
    per_step = Compose(
        [
            SpatialPadd(keys=keys, spatial_size=[patch] * 3),
            RandSpatialCropd(keys=keys, roi_size=[patch] * 3, random_size=False),
            *[RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(3)],
        ]
    )
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n, bs = len(cached), 2
    steps = (n + bs - 1) // bs
    stamps = []
    for epoch in range(epochs):
        per_step.set_random_state(seed=epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).tolist()
        for s in range(steps):
            batch = [per_step(dict(cached[i])) for i in order[s * bs : (s + 1) * bs]]
            x = torch.stack([b["image"].as_tensor() for b in batch])
            y = torch.stack([b["label"].as_tensor() for b in batch])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            stamps.append(time.perf_counter())
    return statistics.median(_step_times(stamps, steps))


def _inference(run_dir: Path, case_size: int, patch: int, repeats: int) -> tuple[float, float]:
    import onnxruntime as ort
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    net = UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    net.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    net.eval()
    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])

    def onnx_predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])

    image, _ = _ball_case(np.random.default_rng(1), case_size)
    x = torch.from_numpy(image[None, None])
    best = {"torch": float("inf"), "onnx": float("inf")}
    outs = {}
    for _ in range(repeats):
        for name, fn in (("torch", net), ("onnx", onnx_predict)):
            t = time.perf_counter()
            with torch.no_grad():
                outs[name] = sliding_window_inference(x, [patch] * 3, 2, fn, overlap=0.25)
            best[name] = min(best[name], time.perf_counter() - t)
    diff = float((outs["torch"] - outs["onnx"]).abs().max())
    print(f"  max |onnx - torch| over the case: {diff:.3g}")
    return best["torch"], best["onnx"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--case-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cases = _make_data(tmp / "src", args.cases, args.size)
        cat = open_catalogue(get_settings(data_dir=tmp / "data"))
        ingest(cat, tmp / "src", "balls")
        # all cases train; one validation case is required by the trainer
        make_split(cat, "balls", SplitSpec(subsets=("train", "validation"), ratios=(7, 1)))
        train_keys = {
            r["case_key"] for r in case_records(cat, "balls") if r["splits"]["default"] == "train"
        }
        train_cases = [c for i, c in enumerate(cases) if f"b{i:02d}" in train_keys]
        n_train = len(train_cases)
        steps = (n_train + 1) // 2
        text = RECIPE.format(epochs=args.epochs, p=args.patch)
        ours, base = [], []
        for r in range(args.repeats):
            base.append(_loop_run(train_cases, args.patch, args.epochs))
            ours.append(_trainer_run(cat, text, tmp / f"run{r}", steps))
            print(f"  repeat {r + 1}: loop {base[-1] * 1e3:.1f} ms/step, lab {ours[-1] * 1e3:.1f}")
        b, o = min(base), min(ours)
        print(f"training step ({n_train} cases of {args.size}^3, patch {args.patch}^3, batch 2):")
        print(f"  hand-written MONAI loop: {b * 1e3:.1f} ms/step")
        print(f"  medarena lab trainer:    {o * 1e3:.1f} ms/step")
        print(f"  overhead: {(o / b - 1) * 100:+.1f} % (target at most +5 %)")
        # export the last run for the inference comparison
        last = tmp / "export"
        train(
            parse_recipe(text.replace("export: {onnx: false}", "export: {onnx: true}")),
            cat,
            last,
            export=True,
            register=False,
        )
        t_torch, t_onnx = _inference(last, args.case_size, args.patch, args.repeats)
        print(f"sliding-window inference, one {args.case_size}^3 case, roi {args.patch}^3:")
        print(
            f"  PyTorch {t_torch:.3f} s, ONNX Runtime {t_onnx:.3f} s, ratio {t_onnx / t_torch:.2f}"
        )
        cat.close()


if __name__ == "__main__":
    main()
