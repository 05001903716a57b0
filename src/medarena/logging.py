"""Logging set-up.

Nothing that could hold a patient identifier is logged: modules log file paths
relative to the input root, counts and reasons, never DICOM attribute values.
"""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "INFO") -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_medarena", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._medarena = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
