"""The shared YAML problem reporting of specs and recipes (src/medarena/yamlerrors.py)."""

from __future__ import annotations

import pytest

from medarena.yamlerrors import YamlProblem, field_name, parse_mapping, problem_at


class _Refused(Exception):
    def __init__(self, source: str, problems: list[YamlProblem]) -> None:
        super().__init__(source)
        self.problems = problems


TEXT = "name: x\nphases:\n  - slug: a\n    closes: 2026-01-01\n"


def test_problem_names_line_and_field_of_a_nested_value() -> None:
    root, data = parse_mapping(TEXT, "f.yaml", "spec", _Refused)
    assert data["phases"][0]["slug"] == "a"
    p = problem_at(root, ("phases", 0, "closes"), "bad date")
    assert (p.line, p.field) == (4, "phases[0].closes")
    assert str(p) == "line 4, field phases[0].closes: bad date"


def test_missing_field_points_at_the_mapping_that_should_hold_it() -> None:
    root, _ = parse_mapping(TEXT, "f.yaml", "spec", _Refused)
    p = problem_at(root, ("phases", 0, "opens"), "Field required", missing=True)
    assert p.line == 3
    assert p.message.startswith("missing (required in the mapping starting here)")
    assert field_name(("a", 1, "b")) == "a[1].b"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: [1,\n", None, "YAML syntax"),
        ("- 1\n- 2\n", 1, "the recipe must be a YAML mapping"),
        ("a: 1\nb:\n  c: 1\n  c: 2\n", 4, "duplicate key"),
    ],
)
def test_refused_files_name_the_line(text: str, line: int | None, message: str) -> None:
    with pytest.raises(_Refused) as info:
        parse_mapping(text, "r.yaml", "recipe", _Refused)
    (problem,) = info.value.problems
    assert message in problem.message
    if line is not None:
        assert problem.line == line
