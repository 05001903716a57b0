"""Train a recipe: one loop for every task type, deterministic, resumable.

Determinism: the weights are initialised after seeding torch with ``trainer.seed``; each
epoch shuffles with a generator and seeds the per-step transforms from (seed, epoch), so
an epoch's samples do not depend on how the run got there; the global RNG states (dropout)
travel in the checkpoint. A run killed at any point and started again on the same output
folder continues from its last checkpoint and ends with the same weights as a run that was
never interrupted. The loop only touches the model through forward/backward/step, so
wrapping it in DistributedDataParallel later changes nothing else.

Validation uses the evaluation engine's metric functions (the ones that score challenges):
Dice per foreground class for segmentation, ``classification_metrics`` (multiclass or
multilabel), ``regression_metrics``, the FROC / LUNA16 CPM of ``evaluation.detection`` for
detection (candidates in world mm from the sigmoid of the heatmap by
``lab.detection.heatmap_candidates``, or in mode segmentation from the foreground
probability by ``component_candidates``) and ``image_metrics`` (PSNR, SSIM, MAE) for
image_to_image, computed on the validation cases in the preprocessed grid. The map tasks
(segmentation, detection, image_to_image) are trained on patches and validated by sliding
windows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medarena.datasets.catalogue import Catalogue
from medarena.errors import InputError
from medarena.evaluation.classification import classification_metrics
from medarena.evaluation.detection import luna16_cpm, scan_counts
from medarena.evaluation.image import image_metrics
from medarena.evaluation.regression import regression_metrics
from medarena.evaluation.segmentation import segmentation_metrics
from medarena.lab.blocks import MAP_TASKS
from medarena.lab.checkpoint import (
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from medarena.lab.data import CaseArrays, load_split
from medarena.lab.detection import component_candidates, heatmap_candidates
from medarena.lab.pipeline import build_model_parts, build_pipelines
from medarena.lab.recipe import Recipe

logger = logging.getLogger(__name__)

MAIN_METRIC = {
    "segmentation": "dice",
    "classification": "accuracy",
    "multilabel": "subset_accuracy",
    "regression": "mae",
    "detection": "cpm",
    "image_to_image": "psnr",
}


@dataclass
class Progress:
    """One progress report: sent after every step and after each validation."""

    epoch: int  # 1-based epoch in progress
    epochs: int
    step: int  # step within the epoch, 1-based
    steps: int  # steps per epoch
    loss: float
    metric_name: str
    metric: float | None  # last validation value
    validated: bool = False  # sent after a validation (not after a training step)


ProgressFn = Callable[[Progress], None]


@dataclass
class RunResult:
    out_dir: Path
    epochs_done: int
    steps_done: int
    stopped: str  # "epochs" | "time_budget"
    resumed_from_epoch: int | None
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    export: dict[str, Any] | None = None
    model: str | None = None  # "name:version" in the model registry


def recipe_digest(recipe: Recipe) -> str:
    return hashlib.sha256(recipe.to_yaml().encode()).hexdigest()


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("no CUDA device is present", path="trainer.device", value=name)
    return torch.device(name)


def _as_dict(case: CaseArrays) -> dict[str, Any]:
    import torch
    from monai.data import MetaTensor

    affine = torch.as_tensor(case.affine, dtype=torch.float64)
    d: dict[str, Any] = {"image": MetaTensor(torch.from_numpy(case.image), affine=affine)}
    if case.label is not None:
        d["label"] = MetaTensor(torch.from_numpy(case.label), affine=affine)
    if case.target is not None:
        d["target"] = case.target
    return d


def _plain(x: Any) -> Any:
    from monai.data import MetaTensor

    return x.as_tensor() if isinstance(x, MetaTensor) else x


def _spacing_of(x: Any, ndim: int) -> tuple[float, ...]:
    from monai.data import MetaTensor

    if isinstance(x, MetaTensor):
        return tuple(float(v) for v in x.pixdim[:ndim])
    return (1.0,) * ndim


class _Run:
    def __init__(self, recipe: Recipe, cat: Catalogue, out_dir: Path) -> None:
        import torch

        self.recipe = recipe
        self.out_dir = out_dir
        self.tr = recipe.trainer
        self.task = recipe.task.type
        self.device = _device(self.tr.device)
        split = load_split(cat, recipe)
        self.class_names = split.class_names
        self.dataset_version = split.dataset_version
        pipes = build_pipelines(recipe)
        self.per_step = pipes.per_step
        self.train_cases = [pipes.cached(_as_dict(c)) for c in split.train]
        self.val_cases = [pipes.cached(_as_dict(c)) for c in split.validation]
        self.val_keys = [c.key for c in split.validation]
        self.val_attributes = {c.key: c.attributes or {} for c in split.validation}
        self.val_findings = {c.key: c.findings for c in split.validation if c.findings}
        self.per_case: dict[str, dict[str, float]] = {}  # of the last validation
        torch.manual_seed(self.tr.seed)
        net, self.loss_fn, make_opt, make_sched = build_model_parts(recipe)
        self.model = net.to(self.device)
        self.optimizer = make_opt(self.model.parameters())
        self.scheduler = make_sched(self.optimizer)

    # ------------------------------------------------------------------ batches
    def _batch(self, idx: list[int]) -> tuple[Any, Any]:
        import torch

        images, targets = [], []
        for i in idx:
            sample = self.per_step(dict(self.train_cases[i]))
            if isinstance(sample, list):  # patch croppers return a list of num_samples=1
                sample = sample[0]
            images.append(_plain(sample["image"]).float())
            if self.task in MAP_TASKS:
                targets.append(_plain(sample["label"]).float())
            else:
                targets.append(torch.as_tensor(sample["target"]))
        x = torch.stack(images).to(self.device)
        if self.task in MAP_TASKS:
            y = torch.stack(targets).to(self.device)
        elif self.task == "classification":
            y = torch.stack(targets).long().to(self.device)
        elif self.task == "multilabel":
            y = torch.stack(targets).float().to(self.device)
        else:
            y = torch.stack(targets).float().reshape(-1, 1).to(self.device)
        return x, y

    # ------------------------------------------------------------------ validation
    def predict(self, image: Any) -> Any:
        """Network output for one preprocessed image (C, *spatial), no batch axis.

        Logits (segmentation, classification, multilabel, detection heatmap), the value
        (regression) or the image (image_to_image); map tasks by sliding windows.
        """
        import torch
        from monai.inferers import sliding_window_inference

        x = _plain(image).float()[None].to(self.device)
        with torch.no_grad():
            if self.task not in MAP_TASKS:
                return self.model(x)[0]
            sw = self.tr.sliding_window
            if sw is not None:
                out = sliding_window_inference(
                    x,
                    roi_size=list(self.tr.patch_size),
                    sw_batch_size=self.tr.batch_size,
                    predictor=self.model,
                    overlap=sw.overlap,
                    mode=sw.mode,
                )
                return out[0]
            # whole image: pad every axis to a multiple of 16 (UNet strides), crop back
            shape = x.shape[2:]
            pads: list[int] = []
            for s in reversed(shape):
                pads += [0, (-s) % 16]
            y = self.model(torch.nn.functional.pad(x, pads))
            return y[(0, slice(None), *(slice(0, s) for s in shape))]

    def validate(self) -> dict[str, float]:
        self.model.eval()
        try:
            if self.task == "segmentation":
                return self._validate_segmentation()
            if self.task == "detection":
                return self._validate_detection()
            if self.task == "image_to_image":
                return self._validate_image_to_image()
            outs = [self.predict(c["image"]).cpu().numpy() for c in self.val_cases]
            targets = np.asarray([c["target"] for c in self.val_cases])
            if self.task == "multilabel":
                scores = 1.0 / (1.0 + np.exp(-np.stack(outs).astype(np.float64)))
                exact = np.all((scores >= 0.5) == (targets >= 0.5), axis=1)
                self.per_case = {
                    k: {"correct": float(h)} for k, h in zip(self.val_keys, exact, strict=True)
                }
                m = classification_metrics(
                    targets, scores, task="multilabel", class_names=self.class_names
                )
                keep = ("subset_accuracy", "auc", "f1_macro")
                return {k: v for k, v in m.items() if k in keep}
            if self.task == "classification":
                logits = np.stack(outs).astype(np.float64)
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                scores = e / e.sum(axis=1, keepdims=True)
                hits = scores.argmax(axis=1) == targets.astype(int)
                self.per_case = {
                    k: {"correct": float(h)} for k, h in zip(self.val_keys, hits, strict=True)
                }
                m = classification_metrics(
                    targets.astype(int),
                    scores,
                    task="multiclass",
                    class_names=self.class_names,
                )
                return {k: v for k, v in m.items() if k in ("accuracy", "auc", "f1_macro")}
            preds = np.asarray([o.reshape(-1)[0] for o in outs], dtype=np.float64)
            errors = np.abs(preds - targets.astype(np.float64))
            self.per_case = {
                k: {"abs_error": float(v)} for k, v in zip(self.val_keys, errors, strict=True)
            }
            m = regression_metrics(targets.astype(np.float64), preds)
            return {k: m[k] for k in ("mae", "rmse")}
        finally:
            self.model.train()

    def _validate_segmentation(self) -> dict[str, float]:
        per_case = []
        nd = self.recipe.task.spatial_dims
        for c in self.val_cases:
            pred = self.predict(c["image"]).argmax(0).cpu().numpy()
            ref = _plain(c["label"])[0].cpu().numpy().astype(np.int64)
            spacing = _spacing_of(c["image"], nd)
            dices = [
                segmentation_metrics(pred == k, ref == k, spacing, metrics=("dice",))["dice"]
                for k in range(1, self.recipe.task.num_classes)
            ]
            per_case.append(float(np.mean(dices)))
        self.per_case = {k: {"dice": v} for k, v in zip(self.val_keys, per_case, strict=True)}
        return {"dice": float(np.mean(per_case))}

    def _validate_detection(self) -> dict[str, float]:
        settings = self.recipe.task.detection
        assert settings is not None
        nd = self.recipe.task.spatial_dims
        candidates: list[dict[str, Any]] = []
        refs: list[dict[str, Any]] = []
        excluded: list[dict[str, Any]] = []

        def point(key: str, f: dict[str, float]) -> dict[str, Any]:
            return {
                "scan_id": key,
                "x": float(f["x"]),
                "y": float(f["y"]),
                "z": float(f["z"]) if nd == 3 else 0.0,  # 2D candidates have z = 0
                "diameter_mm": float(f["diameter_mm"]),
            }

        by_segmentation = settings.mode == "segmentation"
        find = component_candidates if by_segmentation else heatmap_candidates
        for key, c in zip(self.val_keys, self.val_cases, strict=True):
            out = self.predict(c["image"])
            prob = (out.softmax(0)[1] if by_segmentation else out.sigmoid()[0]).cpu().numpy()
            affine = np.asarray(c["image"].affine, dtype=np.float64)
            for cand in find(
                prob,
                affine,
                threshold=settings.threshold,
                min_distance_mm=settings.min_distance_mm,
                max_candidates=settings.max_candidates,
            ):
                candidates.append({"scan_id": key, **cand})
            found = self.val_findings.get(key, {"nodules": [], "excluded": []})
            refs += [point(key, f) for f in found["nodules"]]
            excluded += [point(key, f) for f in found["excluded"]]
        froc = luna16_cpm(candidates, refs, scan_ids=self.val_keys, excluded=excluded, bootstrap=0)
        counts = scan_counts(candidates, refs, scan_ids=self.val_keys, excluded=excluded)
        self.per_case = {
            k: {
                "sensitivity": c.n_detected / c.n_nodules if c.n_nodules else float("nan"),
                "n_false_positives": float(c.n_false_positives),
            }
            for k, c in counts.items()
        }
        return froc.metrics()

    def _validate_image_to_image(self) -> dict[str, float]:
        settings = self.recipe.task.image_to_image
        assert settings is not None
        per_case: dict[str, dict[str, float]] = {}
        for key, c in zip(self.val_keys, self.val_cases, strict=True):
            pred = self.predict(c["image"])[0].cpu().numpy()
            ref = _plain(c["label"])[0].cpu().numpy()
            m = image_metrics(pred, ref, data_range=settings.data_range)
            per_case[key] = {"mae": m["mae"], "psnr": m["psnr"], "ssim": m["ssim"]}
        self.per_case = per_case
        return {
            name: float(np.mean([v[name] for v in per_case.values()]))
            for name in ("psnr", "ssim", "mae")
        }

    # ------------------------------------------------------------------ state
    def state(
        self,
        epochs_done: int,
        steps_done: int,
        history: list[dict[str, Any]],
        elapsed_s: float = 0.0,
    ) -> dict:
        return {
            "recipe_digest": recipe_digest(self.recipe),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states(),
            "epochs_done": epochs_done,
            "steps_done": steps_done,
            "history": history,
            "class_names": self.class_names,
            # training seconds spent up to this checkpoint, over every attempt: a resumed
            # run spends only what is left of trainer.time_budget_s
            "elapsed_s": elapsed_s,
        }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def train(
    recipe: Recipe,
    cat: Catalogue,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    export: bool = True,
    register: bool = True,
) -> RunResult:
    """Train ``recipe`` into ``out_dir``, continuing from its last checkpoint if it has one.

    Writes ``recipe.yaml``, ``checkpoints/last.pt``, ``curves.json``, ``model.pt``,
    ``metrics.json``, ``model_card.json``, ``result.json`` (once finished: running again
    reports it, without training or registering again) and, when the recipe asks for it,
    ``model.onnx`` + ``export.json``; with ``register`` the model is stored in the registry.
    """
    import torch

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    digest = recipe_digest(recipe)
    previous = load_checkpoint(ckpt_dir)
    if previous is not None and previous["recipe_digest"] != digest:
        raise InputError(
            "the output folder holds a checkpoint of a different recipe",
            path=out_dir,
            hint="use another --out folder, or delete the folder to start over",
        )
    done_file = out_dir / "result.json"
    if previous is not None and done_file.exists():
        # a finished (and registered) run: report it again, do not train or register twice
        done = json.loads(done_file.read_text())
        done["out_dir"] = out_dir
        return RunResult(**done)
    torch.use_deterministic_algorithms(True, warn_only=True)
    run = _Run(recipe, cat, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recipe.yaml").write_text(recipe.to_yaml())
    tr = recipe.trainer
    epochs_done, steps_done, history = 0, 0, []
    resumed: int | None = None
    spent_before = 0.0  # seconds of training before this attempt (from the checkpoint)
    if previous is not None:
        run.model.load_state_dict(previous["model"])
        run.optimizer.load_state_dict(previous["optimizer"])
        run.scheduler.load_state_dict(previous["scheduler"])
        restore_rng_states(previous["rng"])
        epochs_done, steps_done = previous["epochs_done"], previous["steps_done"]
        history = list(previous["history"])
        spent_before = float(previous.get("elapsed_s", 0.0))
        resumed = epochs_done
        logger.info("resuming %s from epoch %d", recipe.name, epochs_done)
    metric_name = MAIN_METRIC[run.task]
    last_metric: float | None = history[-1].get(metric_name) if history else None
    n = len(run.train_cases)
    steps = (n + tr.batch_size - 1) // tr.batch_size
    started = time.monotonic() - spent_before
    stopped = "epochs"
    finished_before = bool(history) and history[-1].get("stopped") == "time_budget"
    run.model.train()
    epoch = epochs_done
    while epoch < tr.epochs and not finished_before:
        epoch_seed = (tr.seed * 1_000_003 + epoch) % (2**32)
        run.per_step.set_random_state(seed=epoch_seed)
        gen = torch.Generator().manual_seed(epoch_seed)
        order = torch.randperm(n, generator=gen).tolist()
        losses = []
        out_of_time = False
        for s in range(steps):
            x, y = run._batch(order[s * tr.batch_size : (s + 1) * tr.batch_size])
            run.optimizer.zero_grad(set_to_none=True)
            loss = run.loss_fn(run.model(x), y)
            loss.backward()
            run.optimizer.step()
            steps_done += 1
            losses.append(float(loss.detach()))
            if progress:
                progress(
                    Progress(
                        epoch + 1, tr.epochs, s + 1, steps, losses[-1], metric_name, last_metric
                    )
                )
            if tr.time_budget_s is not None and time.monotonic() - started >= tr.time_budget_s:
                out_of_time = True
                break
        run.scheduler.step()
        epoch += 1
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": steps_done,
            "loss": float(np.mean(losses)),
            "lr": float(run.optimizer.param_groups[0]["lr"]),
        }
        last = epoch == tr.epochs or out_of_time
        if epoch % tr.val_every == 0 or last:
            row.update(run.validate())
            last_metric = row[metric_name]
            if progress:
                progress(
                    Progress(
                        epoch, tr.epochs, steps, steps, row["loss"], metric_name, last_metric, True
                    )
                )
        if out_of_time:
            row["stopped"] = stopped = "time_budget"
        history.append(row)
        if epoch % tr.checkpoint_every == 0 or last:
            elapsed = time.monotonic() - started
            save_checkpoint(ckpt_dir, run.state(epoch, steps_done, history, elapsed))
            _write_json(out_dir / "curves.json", history)
        if out_of_time:
            break
    if finished_before:
        stopped = "time_budget"
    not_metrics = ("epoch", "step", "lr", "loss", "stopped")
    metrics = {k: v for k, v in (history[-1] if history else {}).items() if k not in not_metrics}
    # CPU tensors: a model trained on a GPU must load on a server without one
    cpu_state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    torch.save(cpu_state, out_dir / "model.pt")
    _write_json(out_dir / "metrics.json", {"validation": metrics, "class_names": run.class_names})
    export_info = None
    if export and recipe.export.onnx:
        from medarena.lab.export import export_onnx

        export_info = export_onnx(run, out_dir / "model.onnx")
        _write_json(out_dir / "export.json", export_info)
    from medarena.lab.registry import model_card, register_model, subgroup_metrics

    if not run.per_case:  # resumed after the last validation: validate once more
        run.validate()
    card = model_card(
        recipe,
        subgroups=subgroup_metrics(run.per_case, run.val_attributes),
        dataset_version=run.dataset_version,
        n_train=len(run.train_cases),
        n_validation=len(run.val_cases),
        class_names=run.class_names,
        metrics=metrics,
        stopped=stopped,
        export=export_info,
    )
    _write_json(out_dir / "model_card.json", card)
    model_ref = None
    if register:
        info = register_model(
            cat,
            recipe,
            digest,
            out_dir,
            card=card,
            metrics=metrics,
            curves=history,
            export=export_info,
        )
        model_ref = info.ref
    result = RunResult(
        out_dir,
        history[-1]["epoch"] if history else 0,
        steps_done,
        stopped,
        resumed,
        metrics,
        history,
        export_info,
        model_ref,
    )
    _write_json(done_file, {**vars(result), "out_dir": str(out_dir)})
    return result
