"""The root handler follows sys.stderr: commands run in-process must not bind it for good."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from medarena.logging import configure


@pytest.fixture
def clean_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_handler_writes_to_the_current_stderr(
    clean_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure("INFO")  # as a CLI command does, while a test runner owns stderr
    logging.getLogger("medarena.test").info("one")
    first.close()  # that runner is done
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("medarena.test").info("two")
    out = second.getvalue()
    assert "medarena.test: two" in out
    assert "Logging error" not in out  # a handler bound to the closed stream would say so
    configure("INFO")  # idempotent: still one handler, one line per record
    logging.getLogger("medarena.test").info("three")
    assert second.getvalue().count("medarena.test: three") == 1
