"""Every module of medarena.web.routes is mounted, the listed ones first and in their order."""

from __future__ import annotations

from pathlib import Path

import medarena.web.routes as routes_package
from medarena.web.app import ROUTER_MODULES, router_modules


def test_every_route_module_is_included_once_listed_ones_first() -> None:
    files = {
        f"medarena.web.routes.{p.stem}"
        for p in Path(routes_package.__file__).parent.glob("*.py")
        if not p.stem.startswith("_")
    }
    names = router_modules()
    assert len(names) == len(set(names))
    assert set(names) == files
    assert names[: len(ROUTER_MODULES)] == list(ROUTER_MODULES)
    rest = names[len(ROUTER_MODULES) :]
    assert rest == sorted(rest)
