"""HTML reports: one self-contained file, embedded images, escaped values."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from medarena.evaluation.ranking import RankingConfig, rank_results
from medarena.evaluation.report import evaluation_report_html, ranking_report_html, write_html
from medarena.evaluation.results import EvaluationResult, aggregate_cases
from medarena.evaluation.subgroups import subgroup_analysis

_PNG = b"\x89PNG\r\n\x1a\n"


def _no_external_references(html: str) -> None:
    assert not re.search(r"<(script|link|iframe)\b", html, re.I)
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(_PNG)
    assert "http://" not in html and "https://" not in html


def _result(offset: float, name_case: str = "c0") -> EvaluationResult:
    rng = np.random.default_rng(int(offset * 10))
    cases = {
        f"c{i}": {
            "dice": float(np.clip(0.6 + offset + rng.normal(0, 0.05), 0, 1)),
            "hd95": float(3 - offset),
        }
        for i in range(15)
    }
    cases[name_case] = cases.pop("c0")
    return EvaluationResult(
        task="segmentation",
        cases=cases,
        aggregate=aggregate_cases(cases),
        missing=["c14"],
        failed={"c13": "<b>pred/c13.nii.gz</b>: shape (1,) differs"},
    )


def test_evaluation_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    res = _result(0.1, name_case="<script>alert(1)</script>")
    attrs = {c: {"site": "A" if i % 2 else "B&C"} for i, c in enumerate(res.cases)}
    sub = subgroup_analysis(res.cases, attrs, metric="dice", by="site", bootstrap=50)
    html = evaluation_report_html(res, subgroups=[sub])
    _no_external_references(html)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;pred/c13.nii.gz&lt;/b&gt;" in html
    assert "B&amp;C" in html
    # Distribution plot and one subgroup plot.
    assert html.count("data:image/png;base64,") == 2
    out = write_html(html, tmp_path / "r" / "report.html")
    assert out.read_text(encoding="utf-8") == html


def test_ranking_report_has_stability_plot() -> None:
    results = {"alpha": _result(0.2), "beta": _result(0.1), "gam<ma": _result(0.0)}
    ranking = rank_results(results, RankingConfig(metric="dice", bootstrap=200, seed=0))
    html = ranking_report_html(ranking, results)
    _no_external_references(html)
    assert "gam&lt;ma" in html and "gam<ma" not in html
    assert 'alt="rank stability"' in html and 'alt="kendall tau"' in html
    assert html.index(">alpha<") < html.index(">beta<")
    # Without bootstrap there is no stability plot.
    plain = ranking_report_html(rank_results(results, RankingConfig(metric="dice")))
    assert "rank stability" not in plain
