"""Error types shared by every layer.

User-facing errors (bad input, bad configuration) are kept apart from internal
failures so that callers (CLI, web, job runner) can show the first kind verbatim
and never retry it.
"""

from __future__ import annotations

from pathlib import Path


class MedarenaError(Exception):
    """Base class of all errors medarena raises on purpose."""


class ConfigError(MedarenaError):
    """The configuration cannot work; the message names the variable to set."""


class InputError(MedarenaError):
    """Bad user input: names the file (or field), the offending value and the rule broken."""

    def __init__(
        self,
        rule: str,
        *,
        path: str | Path | None = None,
        value: object = None,
        hint: str | None = None,
    ) -> None:
        self.rule = rule
        self.path = str(path) if path is not None else None
        self.value = value
        self.hint = hint
        parts = []
        if self.path:
            parts.append(f"{self.path}:")
        if value is not None:
            parts.append(f"invalid value {value!r} -")
        parts.append(rule)
        msg = " ".join(parts)
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class IntegrityError(MedarenaError):
    """Stored data does not match its recorded checksum."""


class NotFoundError(MedarenaError):
    """A named object (dataset, case, blob) does not exist."""


class UserInputError(InputError):
    """A job failed on the user's own input: fail it, do not retry, show the message."""
