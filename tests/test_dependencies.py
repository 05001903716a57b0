"""Every package the code imports is installed by the runtime install, not only by [test].

`./scripts/install` (no --test) installs the runtime dependencies only; an import that only a
test extra provides breaks `medarena demo` on a fresh machine while the whole suite passes.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _runtime_closure() -> set[str]:
    """The runtime dependencies of pyproject.toml and everything they require, unconditionally."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [_name(r) for r in project["dependencies"]]
    # dask[distributed] brings the package `distributed` through an extra
    todo += ["distributed"] if any("[distributed]" in r for r in project["dependencies"]) else []
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "src" / "medarena").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"medarena", "__future__"}


def test_imports_are_runtime_dependencies() -> None:
    providers = metadata.packages_distributions()
    closure = _runtime_closure()
    missing = {}
    for module in sorted(_imported_top_levels()):
        dists = {_name(d) for d in providers.get(module, [])}
        assert dists, f"src imports {module!r}, which no installed distribution provides"
        if not dists & closure:
            missing[module] = sorted(dists)
    assert not missing, f"imported by src but not installed by the runtime install: {missing}"
