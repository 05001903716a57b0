"""The demo's lab-trained baselines: a small network per track, trained, registered, submitted.

For the tracks in :data:`LAB_PLANS`, team "Team Lab" submits a model archive (``model.onnx``
+ ``manifest.yaml``) instead of predictions. The model comes from a lab recipe built here
from the lab's blocks, trained as a lab run of Team Lab's captain (a ``lab.train`` job, as
if launched from the web UI) on the track's ``train`` subset (validated on ``validation``)
within a time budget, registered in the model registry and exported to ONNX by the lab,
then submitted in one click (:func:`medarena.lab.submit.submit_registry_model`: the
manifest is derived from the recipe's preprocessing, so the worker feeds the model what it
was trained on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medarena.datasets.catalogue import Catalogue
from medarena.demo.generators.common import GeneratedTrack

LAB_TEAM = ("Team Lab", "lab@demo.medarena.example", "Lab captain")

# seconds of training per model (2 CPU cores): the run stops after the step that passes it
TIME_BUDGET_S = {"demo": 20.0, "tiny": 3.0}
EPOCHS = {"demo": 40, "tiny": 4}


@dataclass(frozen=True)
class LabPlan:
    """One track's lab baseline: network, loss, normalisation and input size."""

    track: str
    network: Mapping[str, Any]
    loss: str
    normalisation: str
    size: Mapping[str, tuple[int, ...]]  # demo size -> the network's input size


LAB_PLANS: dict[str, LabPlan] = {
    p.track: p
    for p in (
        LabPlan(
            "brain_age",
            {
                "block": "densenet",
                "params": {"init_features": 8, "growth_rate": 8, "block_config": [2, 2]},
            },
            "l1",
            "zscore",
            {"demo": (32, 32, 32), "tiny": (16, 16, 16)},
        ),
        LabPlan(
            "fundus",
            {
                "block": "densenet",
                "params": {"init_features": 8, "growth_rate": 8, "block_config": [2, 2]},
            },
            "bce",
            "scale_range",
            {"demo": (64, 64), "tiny": (32, 32)},
        ),
    )
}


def recipe_name(track: str) -> str:
    return f"demo-{track.replace('_', '-')}-lab"


def recipe_yaml(gen: GeneratedTrack, dataset: str, split: str, target: str | None) -> str:
    """The lab recipe of ``gen``'s track (a file a person can read and edit)."""
    plan = LAB_PLANS[gen.track]
    size = list(plan.size[gen.size])
    task: dict[str, Any] = {
        "type": gen.task,
        "spatial_dims": len(size),
        "in_channels": len(gen.channels) if gen.task != "multilabel" else 3,
    }
    ds: dict[str, Any] = {"name": dataset, "split": split}
    if gen.task == "multilabel":
        ds["targets"] = list(gen.task_config["labels"])
    else:
        ds["target"] = target
    recipe = {
        "name": recipe_name(gen.track),
        "description": f"medarena demo: Team Lab's baseline for the {gen.track} track "
        "(synthetic data; not for clinical use).",
        "dataset": ds,
        "task": task,
        "preprocess": [{"block": plan.normalisation}],
        "network": dict(plan.network),
        "loss": {"block": plan.loss},
        "optimizer": {"block": "adam", "params": {"lr": 0.01}},
        "trainer": {
            "epochs": EPOCHS[gen.size],
            "time_budget_s": TIME_BUDGET_S[gen.size],
            "batch_size": 4,
            "patch_size": size,
            "seed": gen.seed,
            "device": "cpu",
        },
    }
    return yaml.safe_dump(recipe, sort_keys=False)


def train_lab_model(
    cat: Catalogue,
    gen: GeneratedTrack,
    dataset: str,
    split: str,
    target: str | None,
    owner_id: int,
) -> str:
    """Train the track's recipe as a lab run of ``owner_id`` (Team Lab's captain); its
    registry ref. The run is the one a user would launch from the web UI or
    ``medarena lab runs submit``: queued as a ``lab.train`` job and trained here by a worker
    for that kind, so the captain finds it on /lab with its curves and sees the model on
    /lab/models. A finished run of the same recipe by the same user is reused."""
    from sqlalchemy import select

    from medarena.db.lab_models import LabRun
    from medarena.db.platform_models import User
    from medarena.jobs.worker import Worker
    from medarena.lab.recipe import parse_recipe
    from medarena.lab.runs import HANDLERS, SUCCEEDED, launch_run
    from medarena.lab.trainer import recipe_digest

    text = recipe_yaml(gen, dataset, split, target)
    digest = recipe_digest(parse_recipe(text, f"demo {gen.track} recipe"))
    with cat.sessions() as s:
        done = s.scalar(
            select(LabRun.model_ref).where(
                LabRun.owner_id == owner_id,
                LabRun.recipe_digest == digest,
                LabRun.status == SUCCEEDED,
                LabRun.model_ref.is_not(None),
            )
        )
        if done is not None:
            return str(done)
        user = s.get(User, owner_id)
        assert user is not None
        run = launch_run(s, user, text, data_dir=Path(cat.settings.data_dir))
        run_id = run.id
        s.commit()
    Worker(cat.sessions, HANDLERS, settings=cat.settings, retry_delay_seconds=0.0).run_until_idle()
    with cat.sessions() as s:
        finished = s.get(LabRun, run_id)
        assert finished is not None
        if finished.status != SUCCEEDED or finished.model_ref is None:
            raise RuntimeError(
                f"demo lab run {run_id} ({gen.track}) ended {finished.status}: {finished.error}"
            )
        return str(finished.model_ref)
