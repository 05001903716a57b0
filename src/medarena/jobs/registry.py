"""The explicit handler registry: which function runs which job kind.

Handlers are named, never discovered: a source is ``"module:attribute"`` naming a dict of
job kind -> handler, imported when a worker starts. The platform's own handlers are
listed in :data:`PLATFORM_HANDLER_SOURCES`; ``medarena worker --handlers`` replaces them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from medarena.errors import ConfigError
from medarena.jobs.worker import Handler

# The challenge platform's scoring handlers (challenges/scoring.py exports HANDLERS) and
# the lab's training runs (lab/runs.py: job kind "lab.train").
PLATFORM_HANDLER_SOURCES: tuple[str, ...] = (
    "medarena.challenges.scoring:HANDLERS",
    "medarena.challenges.explanations:HANDLERS",
    "medarena.lab.runs:HANDLERS",
)


def load_handlers(sources: Iterable[str]) -> dict[str, Handler]:
    """Import each ``module:attribute`` registry and merge them; a kind may appear once."""
    merged: dict[str, Handler] = {}
    origin: dict[str, str] = {}
    for source in sources:
        module_name, sep, attr = source.partition(":")
        if not sep or not module_name or not attr:
            raise ConfigError(
                f"handler registry {source!r} must be written 'module:attribute', "
                "e.g. 'medarena.challenges.scoring:HANDLERS'"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"handler registry {source!r}: cannot import {module_name}: {exc}"
            ) from exc
        registry = getattr(module, attr, None)
        if not isinstance(registry, Mapping):
            raise ConfigError(
                f"handler registry {source!r} must be a dict of job kind -> function, "
                f"found {type(registry).__name__}"
            )
        for kind, fn in registry.items():
            if not isinstance(kind, str) or not callable(fn):
                raise ConfigError(
                    f"handler registry {source!r}: entry {kind!r} must map a kind (str) "
                    "to a function"
                )
            if kind in merged:
                raise ConfigError(
                    f"job kind {kind!r} is registered twice: in {origin[kind]} and {source}"
                )
            merged[kind] = fn
            origin[kind] = source
    if not merged:
        raise ConfigError("no job handlers registered: name at least one registry")
    return merged
