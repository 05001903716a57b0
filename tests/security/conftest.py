"""Fixtures of the authorization sweep: the challenge tests' fixtures, imported (not copied).

``catalogue`` is a private copy of a template world with dataset ``brain`` and split
``challenge`` whose ``test`` subset is hidden (tests/challenges/conftest.py), on each
backend that module provides. Every fixture of that module is re-exported, whatever its
name, so the sweep follows when it gains a backend or a helper fixture.
"""

from __future__ import annotations

from _pytest.fixtures import getfixturemarker

from challenges import conftest as _challenge_conftest

globals().update(
    {
        name: value
        for name, value in vars(_challenge_conftest).items()
        if getfixturemarker(value) is not None
    }
)
