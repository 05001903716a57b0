"""Atomic training checkpoints: everything needed to continue a run bit for bit.

A checkpoint holds the model, optimiser and scheduler states, the RNG states (torch,
numpy, Python), the completed epoch and step counts, the training curves and the
digest of the recipe it belongs to. It is written to a temporary file in the same
folder, flushed to disk and renamed over ``last.pt``, so a kill at any instant leaves
either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medarena.errors import InputError

CHECKPOINT_NAME = "last.pt"


def rng_states() -> dict[str, Any]:
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    # plain Python values, so the checkpoint loads with torch.load(weights_only=True)
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically as ``folder/last.pt``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".last.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        final = folder / CHECKPOINT_NAME
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The last checkpoint in ``folder``, or None if there is none."""
    import torch

    path = folder / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        # weights_only: a checkpoint is data, never code to unpickle
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise InputError(f"cannot read checkpoint: {exc}", path=path) from None
    return state
