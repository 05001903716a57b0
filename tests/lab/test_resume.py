"""A training run killed with SIGKILL resumes from its last checkpoint to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from recipes import seg2d

from medarena.datasets.catalogue import Catalogue
from medarena.lab import parse_recipe
from medarena.lab.trainer import train

EPOCHS = 8
TEXT = seg2d(EPOCHS).replace("seed: 1}", "seed: 1, val_every: 4}")


def _kill_mid_run(recipe_file: Path, out: Path, data_dir: Path) -> int:
    """Start `medarena lab train` in a child, SIGKILL it after 2 checkpoints; epochs done."""
    env = {**os.environ, "MEDARENA_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from medarena.cli.main import app; app()"]
    cmd += ["lab", "train", str(recipe_file), "--out", str(out), "--no-export"]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    curves = out / "curves.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert child.poll() is None, f"run ended before the kill: {child.stderr.read()!r}"
            if curves.exists() and len(json.loads(curves.read_text())) >= 2:
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        else:
            raise AssertionError("no checkpoint within 120 s")
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return len(json.loads(curves.read_text()))


def test_killed_run_resumes_to_the_uninterrupted_weights(
    lab_catalogue: Catalogue, lab_data_dir: Path, tmp_path: Path
) -> None:
    recipe = parse_recipe(TEXT)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(TEXT)
    killed = tmp_path / "killed"
    done_at_kill = _kill_mid_run(recipe_file, killed, lab_data_dir)
    assert 2 <= done_at_kill < EPOCHS
    assert not (killed / "model.pt").exists()  # the child really died mid-run

    resumed = train(recipe, lab_catalogue, killed, export=False)
    assert resumed.resumed_from_epoch is not None
    assert done_at_kill <= resumed.resumed_from_epoch < EPOCHS
    assert resumed.epochs_done == EPOCHS

    whole = train(recipe, lab_catalogue, tmp_path / "whole", export=False)
    assert whole.resumed_from_epoch is None
    a = torch.load(killed / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert resumed.history == whole.history  # curves too (losses, metrics, lr)


class _Crash(Exception):
    pass


def test_resumed_run_spends_only_the_rest_of_its_time_budget(
    lab_catalogue: Catalogue, tmp_path: Path
) -> None:
    """The time budget covers every attempt: the checkpoint records the seconds spent."""
    from medarena.lab.checkpoint import load_checkpoint, save_checkpoint
    from medarena.lab.trainer import Progress

    text = seg2d(6).replace("seed: 1}", "seed: 1, time_budget_s: 600}")
    recipe = parse_recipe(text)
    out = tmp_path / "run"

    def crash_in_epoch_3(p: Progress) -> None:
        if p.epoch == 3:
            raise _Crash

    with pytest.raises(_Crash):
        train(recipe, lab_catalogue, out, progress=crash_in_epoch_3, export=False)
    state = load_checkpoint(out / "checkpoints")
    assert state is not None and state["epochs_done"] == 2
    assert 0 < state["elapsed_s"] < 600
    # as if the first attempt had used the whole budget before its last checkpoint
    state["elapsed_s"] = 600.0
    save_checkpoint(out / "checkpoints", state)
    resumed = train(recipe, lab_catalogue, out, export=False)
    assert resumed.resumed_from_epoch == 2
    assert resumed.stopped == "time_budget"
    assert resumed.epochs_done == 3  # one step of epoch 3, then the budget stops it
