"""The challenge spec: validation, YAML line mapping of errors, Markdown sanitising."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from medarena.challenges.spec import ChallengeSpec, SpecError, parse_spec, render_markdown
from medarena.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "challenge.yaml"
SPEC_YAML = (Path(__file__).parent / "spec_small.yaml").read_text()


def _problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.yaml")
    return [(p.line, p.field, p.message) for p in info.value.problems]


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_example_spec_parses_and_round_trips() -> None:
    text = EXAMPLE.read_text()
    spec = parse_spec(text, str(EXAMPLE))
    assert [t.slug for t in spec.tracks] == ["glioma", "brain-age"]
    final = spec.phase("final")
    # +02:00 is kept as an instant: 2025-05-31T22:00Z.
    assert final.opens == dt.datetime(2025, 5, 31, 22, tzinfo=dt.UTC)
    assert final.requires_phase == "preliminary" and final.leaderboard == "private_until_close"
    assert spec.scored_subset(spec.track("brain-age"), final) == "test"
    assert parse_spec(spec.to_yaml()) == spec


def test_ranking_config_comes_from_the_track() -> None:
    spec = parse_spec(EXAMPLE.read_text())
    rc = spec.track("glioma").ranking_config()
    assert (rc.scheme, rc.metric, rc.bootstrap) == ("rank-then-aggregate", "tumour/dice", 1000)
    assert rc.metric_list() == ["tumour/dice"]


def test_phase_state_follows_its_dates(spec: ChallengeSpec) -> None:
    p = spec.phase("preliminary")
    assert p.state(dt.datetime(2019, 12, 31, 23, 59, tzinfo=dt.UTC)) == "upcoming"
    assert p.state(dt.datetime(2020, 1, 1, tzinfo=dt.UTC)) == "open"
    assert p.state(dt.datetime(2099, 1, 1, tzinfo=dt.UTC)) == "closed"


def test_errors_name_line_and_field() -> None:
    text = SPEC_YAML.replace("closes: 2099-01-02T00:00:00Z", "closes: 2019-01-02T00:00:00Z")
    text = text.replace("primary_metric: abs_error", "primary_metric: wellness")
    text = text.replace("opens: 2020-01-01T00:00:00Z", "opens: 2020-01-01 00:00:00")
    problems = _problems(text)
    assert (
        _line_of(text, "closes: 2019-01-02"),
        "phases[1].closes",
    ) in [(line, f) for line, f, _ in problems]
    by_field = {f: (line, m) for line, f, m in problems}
    assert by_field["tracks[1].primary_metric"][0] == _line_of(text, "wellness")
    assert "wellness" in by_field["tracks[1].primary_metric"][1]
    assert by_field["phases[0].opens"] == (
        _line_of(text, "opens: 2020-01-01 00"),
        "Input should have timezone info",
    )


def test_unknown_field_and_unknown_task_are_errors() -> None:
    text = SPEC_YAML.replace("    scored_subset: validation", "    scored_subst: validation")
    text = text.replace("task: regression", "task: astrology")
    problems = {f: (line, m) for line, f, m in _problems(text)}
    assert problems["phases[0].scored_subst"][0] == _line_of(text, "scored_subst")
    assert "astrology" in problems["tracks[1].task"][1]


def test_task_options_are_checked_against_the_task() -> None:
    text = SPEC_YAML.replace("labels: {tumour: 1}", "labels: {tumour: 0}")
    ((line, field, msg),) = _problems(text)
    assert field == "tracks[0].task_config" and line == _line_of(text, "labels: {tumour: 0}")
    assert "background" in msg


def test_missing_required_field_points_at_its_mapping() -> None:
    text = SPEC_YAML.replace("    split: challenge\n  - slug: grade", "  - slug: grade")
    ((line, field, msg),) = _problems(text)
    assert field == "tracks[0].split" and "missing" in msg.lower()
    assert line == _line_of(text, "- slug: seg")


def test_yaml_syntax_error_names_the_line() -> None:
    text = SPEC_YAML.replace("team_size_max: 2", "team_size_max: [2")
    ((line, _, msg),) = _problems(text)
    assert msg.startswith("YAML syntax") and line is not None
    assert line >= _line_of(text, "team_size_max")


def test_duplicate_keys_are_refused() -> None:
    text = SPEC_YAML.replace("    submissions_per_day: 3\n", "    closes: 2030-01-01T00:00:00Z\n")
    ((line, field, msg),) = _problems(text)
    assert (line, field, msg) == (_line_of(text, "2030-01-01"), "phases[0].closes", "duplicate key")


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("  - slug: grade", "  - slug: seg", "track slugs must be unique"),
        ("requires_phase: preliminary", "requires_phase: final", "not a phase listed before"),
        ("    scored_subset: validation", "    scored_subset: train", "training subset"),
        ("team_size_max: 2", "team_size_max: 0", "greater than or equal to 1"),
    ],
)
def test_cross_field_rules(old: str, new: str, needle: str) -> None:
    text = SPEC_YAML.replace(old, new)
    assert text != SPEC_YAML
    messages = " | ".join(m for _, _, m in _problems(text))
    assert needle in messages


def test_not_a_mapping() -> None:
    assert _problems("- just\n- a list\n")[0][2] == "the spec must be a YAML mapping"


def test_lookup_errors_list_known_names(spec: ChallengeSpec) -> None:
    with pytest.raises(InputError, match="tracks: seg, grade"):
        spec.track("nope")
    with pytest.raises(InputError, match="phases: preliminary, final"):
        spec.phase("nope")


def test_markdown_is_rendered_and_sanitised() -> None:
    html = render_markdown(
        "# Rules\n\n**bold** <script>alert(1)</script> <img src=x onerror=alert(1)>\n\n"
        "[ok](https://example.org) [bad](javascript:alert(1))\n"
    )
    assert "<h1>Rules</h1>" in html and "<strong>bold</strong>" in html
    assert "<script" not in html and "<img" not in html
    assert 'href="https://example.org"' in html and "javascript:" not in html.split("[bad]")[0]
    assert 'href="javascript' not in html


def test_docs_example_is_the_example_file() -> None:
    docs = (EXAMPLE.parents[1] / "docs" / "challenges.md").read_text()
    block = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == EXAMPLE.read_text()
    parse_spec(block, "docs/challenges.md")
