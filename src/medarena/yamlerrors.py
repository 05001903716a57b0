"""Line-numbered problems of a YAML file that a person edits (challenge specs, lab recipes).

A file is parsed twice: ``yaml.compose`` keeps the nodes (with their line numbers) and
``yaml.safe_load`` gives the data a pydantic model validates. A validation error's location
(``err["loc"]``) is then looked up among the nodes, so each problem names its line and field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class YamlProblem:
    """One problem of a YAML file: where (line, field) and what."""

    line: int | None  # 1-based
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "(no line)"
        return f"{where}, field {self.field or '(top level)'}: {self.message}"


Loc = tuple[int | str, ...]


def field_name(loc: Loc) -> str:
    """A location as a person writes it: ``phases[0].closes``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def node_at(root: yaml.Node, loc: Loc) -> tuple[yaml.Node, bool]:
    """The deepest YAML node on ``loc``; the flag says whether the whole path was found."""
    node = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    child = v
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            return node, False
        node = child
    return node, True


def problem_at(root: yaml.Node, loc: Loc, message: str, missing: bool = False) -> YamlProblem:
    """The problem ``message`` at ``loc``, on the line of the deepest node found there.

    ``missing``: the field is required but absent, so the line is that of the mapping that
    should hold it, and the message says so.
    """
    node, found = node_at(root, loc)
    if not found and missing:
        message = f"missing (required in the mapping starting here); {message}"
    return YamlProblem(node.start_mark.line + 1, field_name(loc), message)


def duplicate_keys(node: yaml.Node, path: Loc = ()) -> list[YamlProblem]:
    """Every key written twice in one mapping, at the line of its second occurrence."""
    # yaml.safe_load keeps the last of two equal keys silently; a person who wrote a
    # phase's closes twice must be told which one counts (neither: fix the file).
    problems: list[YamlProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                problems.append(
                    YamlProblem(k.start_mark.line + 1, field_name((*path, key)), "duplicate key")
                )
            seen.add(key)
            problems += duplicate_keys(v, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            problems += duplicate_keys(v, (*path, i))
    return problems


def parse_mapping(
    text: str,
    source: str,
    what: str,
    error: Callable[[str, list[YamlProblem]], Exception],
) -> tuple[yaml.Node, dict[str, Any]]:
    """The nodes and the data of YAML ``text`` whose top level must be a mapping.

    Raises ``error(source, problems)`` on a syntax error, a top level that is not a mapping
    (``what`` names the file's kind, e.g. "spec") or a duplicate key.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise error(source, [YamlProblem(line, "", f"YAML syntax: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise error(source, [YamlProblem(None, "", f"YAML: {exc}")]) from None
    if root is None or not isinstance(data, dict):
        raise error(source, [YamlProblem(1, "", f"the {what} must be a YAML mapping")])
    dups = duplicate_keys(root)
    if dups:
        raise error(source, dups)
    return root, data
