"""Logging set-up.

Nothing that could hold a patient identifier is logged: modules log file paths
relative to the input root, counts and reasons, never DICOM attribute values.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A plain StreamHandler keeps the stream it was created with; a command run in-process
    (a test's CliRunner, an embedding application) would leave the root logger writing to
    a stream that has since been closed or replaced.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(level: str = "INFO") -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_medarena", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._medarena = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
