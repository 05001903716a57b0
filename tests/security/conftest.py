"""Fixtures of the authorization sweep: the challenge tests' fixtures, imported (not copied).

``catalogue`` is a private copy of a template world with dataset ``brain`` and split
``challenge`` whose ``test`` subset is hidden (tests/challenges/conftest.py), on each
backend that module provides. Every name of that module is re-exported, fixtures
included, so the sweep follows when it gains a backend or a helper fixture.
"""

from __future__ import annotations

from challenges import conftest as _challenge_conftest

# Every name of that module, fixtures included (pytest finds them in this namespace); no
# private pytest API is needed to tell fixtures apart, and the other names are harmless.
globals().update({k: v for k, v in vars(_challenge_conftest).items() if not k.startswith("__")})
