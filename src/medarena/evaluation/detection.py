"""Point-detection metrics: FROC curve and the LUNA16 competition performance metric (CPM).

Reproduces the official LUNA16 script ``noduleCADEvaluationLUNA16.py`` (see
docs/metrics-tasks.md):

- Candidates are points in world mm with a probability; references are spheres (centre and
  diameter in mm; a negative diameter means 10 mm). A candidate hits a finding when
  dist^2 < (diameter/2)^2 (strict: a candidate exactly at the radius misses).
- Per scan, at most ``max_marks_per_scan`` (100) candidates are kept: those with a
  probability strictly above the 101st highest (ties at that value are all dropped).
- An included nodule hit by several candidates is one true positive scored with the highest
  of their probabilities; the other hits are dropped (not false positives). A candidate
  hitting two nodules counts for both.
- Candidates hitting an excluded finding ("irrelevant findings") are ignored.
- A missed nodule stays in the sensitivity denominator but not in the ROC.
- fps = fpr * (kept candidates - detected nodules) / n_scans and sens = tpr * detected /
  nodules, from ``sklearn.metrics.roc_curve`` (default drop_intermediate); a system with no
  false positive has fps = 0 everywhere. The ROC starts at (0, 0).
- Sensitivity at each operating point (1/8, 1/4, 1/2, 1, 2, 4, 8 FP/scan) by linear
  interpolation (``numpy.interp``) of that curve, evaluated exactly at the point; CPM = mean.
- Confidence intervals: scans resampled with replacement (seeded numpy Generator), the curve
  recomputed with the same scan count, and the interval read as the official script does:
  sorted replicate values at indices floor(a/2 * B) and floor((1 - a/2) * B).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import roc_curve

from medarena.errors import InputError

logger = logging.getLogger(__name__)

LUNA16_OPERATING_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
LUNA16_MAX_MARKS = 100
_DEFAULT_DIAMETER_MM = 10.0


@dataclass(frozen=True)
class Candidate:
    """A detection mark: world position in mm and the system's probability."""

    scan_id: str
    x: float
    y: float
    z: float
    probability: float


@dataclass(frozen=True)
class Finding:
    """A reference finding: sphere centre in world mm and its diameter in mm."""

    scan_id: str
    x: float
    y: float
    z: float
    diameter_mm: float


class ScanCounts(BaseModel):
    """Per-scan matching outcome (for per-case tables)."""

    model_config = ConfigDict(frozen=True)

    n_nodules: int
    n_detected: int
    n_false_positives: int
    n_ignored_excluded: int
    n_double_hits: int
    n_marks_dropped: int


class FROCResult(BaseModel):
    """FROC curve, sensitivities at the operating points, CPM and their bootstrap intervals."""

    model_config = ConfigDict(frozen=True)

    fps: list[float]
    sensitivities: list[float]
    thresholds: list[float]
    operating_points: list[float]
    sensitivity_at: list[float]
    cpm: float
    n_scans: int
    n_nodules: int
    n_detected: int
    n_false_positives: int
    n_ignored_excluded: int
    n_double_hits: int
    n_marks_dropped: int
    bootstrap: int
    confidence: float
    seed: int
    cpm_ci: tuple[float, float] | None = None
    sensitivity_at_ci: list[tuple[float, float]] | None = None

    def metrics(self) -> dict[str, float]:
        """Flat name -> value dict (cpm, sens@<fp>, and CI bounds when bootstrapped)."""
        out = {"cpm": self.cpm}
        for i, (fp, s) in enumerate(zip(self.operating_points, self.sensitivity_at, strict=True)):
            out[f"sens@{fp:g}"] = s
            if self.sensitivity_at_ci is not None:
                out[f"sens@{fp:g}_ci_low"], out[f"sens@{fp:g}_ci_high"] = self.sensitivity_at_ci[i]
        if self.cpm_ci is not None:
            out["cpm_ci_low"], out["cpm_ci_high"] = self.cpm_ci
        return out


def _get(rec: Any, key: str) -> Any:
    if isinstance(rec, Mapping):
        if key not in rec:
            raise InputError(f"record is missing the field '{key}'", value=sorted(rec))
        return rec[key]
    return getattr(rec, key)


def _coerce(
    records: Iterable[Any], value_field: str, what: str
) -> list[tuple[str, NDArray[np.float64], float]]:
    out = []
    for rec in records:
        sid = str(_get(rec, "scan_id"))
        xyz = np.array([_get(rec, "x"), _get(rec, "y"), _get(rec, "z")], dtype=float)
        val = float(_get(rec, value_field))
        if not (np.all(np.isfinite(xyz)) and math.isfinite(val)):
            raise InputError(
                f"{what} coordinates and {value_field} must be finite numbers", value=sid
            )
        out.append((sid, xyz, val))
    return out


@dataclass
class _Entries:
    """The official script's FROC vectors: one entry per TP nodule, missed nodule or FP."""

    gt: NDArray[np.float64]
    prob: NDArray[np.float64]
    excluded: NDArray[np.bool_]
    scan: NDArray[np.int64]


def _cap(probs: NDArray[np.float64], cap: int) -> NDArray[np.int64]:
    """Indices kept by the official 'maxNumberOfCADMarks' rule."""
    if cap <= 0 or probs.size <= cap:
        return np.arange(probs.size)
    threshold = np.sort(probs)[::-1][cap]
    return np.flatnonzero(probs > threshold)[:cap]


def _hits(
    c_xyz: NDArray[np.float64], findings: list[tuple[NDArray[np.float64], float]]
) -> NDArray[np.bool_]:
    """(n_candidates, n_findings) matrix of strict hits dist^2 < (diameter/2)^2."""
    if not findings or c_xyz.shape[0] == 0:
        return np.zeros((c_xyz.shape[0], len(findings)), dtype=bool)
    centres = np.array([f[0] for f in findings])
    diam = np.array([f[1] for f in findings])
    radius = np.where(diam < 0, _DEFAULT_DIAMETER_MM, diam) / 2.0
    d2 = ((c_xyz[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(d2 < radius[None, :] ** 2)


def _match(
    candidates: Iterable[Any],
    references: Iterable[Any],
    scan_ids: Sequence[str],
    excluded: Iterable[Any] | None,
    max_marks_per_scan: int,
    min_probability: float | None = None,
) -> tuple[_Entries, dict[str, ScanCounts]]:
    index = {sid: i for i, sid in enumerate(scan_ids)}
    if len(index) != len(scan_ids):
        raise InputError("scan_ids must be unique", value=len(scan_ids) - len(index))
    per_scan: dict[str, dict[str, list[tuple[NDArray[np.float64], float]]]] = {
        sid: {"cand": [], "ref": [], "excl": []} for sid in scan_ids
    }
    sources = (
        ("cand", candidates, "probability", "candidate"),
        ("ref", references, "diameter_mm", "reference finding"),
        ("excl", excluded or [], "diameter_mm", "excluded finding"),
    )
    for key, records, field, what in sources:
        for sid, xyz, val in _coerce(records, field, what):
            if sid not in per_scan:
                raise InputError(
                    f"{what} belongs to a scan that is not in the evaluated scan list",
                    value=sid,
                    hint="pass every evaluated scan in scan_ids",
                )
            per_scan[sid][key].append((xyz, val))

    gt: list[float] = []
    prob: list[float] = []
    excl_flags: list[bool] = []
    scan_of: list[int] = []
    counts: dict[str, ScanCounts] = {}
    for sid in scan_ids:
        data = per_scan[sid]
        c_xyz = np.array([c[0] for c in data["cand"]], dtype=float).reshape(-1, 3)
        c_p = np.array([c[1] for c in data["cand"]], dtype=float)
        kept = _cap(c_p, max_marks_per_scan)
        n_dropped = c_p.size - kept.size
        c_xyz, c_p = c_xyz[kept], c_p[kept]
        if min_probability is not None:
            # The operating point applies to the marks that survive the per-scan cap.
            above = c_p >= min_probability
            c_xyz, c_p = c_xyz[above], c_p[above]
        is_fp = np.ones(c_p.size, dtype=bool)

        inc_hits = _hits(c_xyz, data["ref"])
        exc_hits = _hits(c_xyz, data["excl"])
        n_ignored = int(np.sum(exc_hits.any(axis=1) & ~inc_hits.any(axis=1)))
        is_fp &= ~inc_hits.any(axis=1) & ~exc_hits.any(axis=1)
        n_detected = 0
        n_double = 0
        for j in range(len(data["ref"])):
            hit = inc_hits[:, j]
            gt.append(1.0)
            scan_of.append(index[sid])
            if hit.any():
                n_detected += 1
                n_double += int(hit.sum()) - 1
                prob.append(float(c_p[hit].max()))
                excl_flags.append(False)
            else:
                prob.append(-1e9)
                excl_flags.append(True)
        for p in c_p[is_fp]:
            gt.append(0.0)
            prob.append(float(p))
            excl_flags.append(False)
            scan_of.append(index[sid])
        counts[sid] = ScanCounts(
            n_nodules=len(data["ref"]),
            n_detected=n_detected,
            n_false_positives=int(is_fp.sum()),
            n_ignored_excluded=n_ignored,
            n_double_hits=n_double,
            n_marks_dropped=n_dropped,
        )
    entries = _Entries(
        gt=np.array(gt, dtype=float),
        prob=np.array(prob, dtype=float),
        excluded=np.array(excl_flags, dtype=bool),
        scan=np.array(scan_of, dtype=np.int64),
    )
    return entries, counts


def froc_curve(
    gt: NDArray[np.float64],
    prob: NDArray[np.float64],
    excluded: NDArray[np.bool_],
    n_scans: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(fps per scan, sensitivity, thresholds) from the FROC vectors, as the LUNA16 script.

    ``gt`` holds 1 per nodule (detected or missed) and 0 per false positive; ``excluded``
    marks missed nodules (kept in the denominator, left out of the ROC). Sensitivity is 0
    everywhere when nothing is detected, NaN when there is no nodule at all.
    """
    keep = ~excluded
    gt_k, prob_k = gt[keep], prob[keep]
    n_detected = float(gt_k.sum())
    n_nodules = float(gt.sum())
    n_kept = gt_k.size
    if n_nodules == 0:
        return np.zeros(1), np.full(1, math.nan), np.full(1, math.inf)
    if n_detected == 0:
        # roc_curve would divide by zero positives; every threshold has sensitivity 0.
        n_fp = n_kept
        fps = np.array([0.0, n_fp / n_scans]) if n_fp else np.zeros(1)
        return fps, np.zeros(fps.size), np.full(fps.size, math.inf)
    with warnings.catch_warnings():
        # No negative sample -> sklearn warns and fpr is NaN; handled below as the script does.
        warnings.simplefilter("ignore")
        fpr, tpr, thr = roc_curve(gt_k, prob_k)
    no_fp = n_nodules == gt.size
    fps = np.zeros(fpr.size) if no_fp else fpr * (n_kept - n_detected) / n_scans
    sens = tpr * n_detected / n_nodules
    return fps, sens, thr


def _read(
    fps: NDArray[np.float64], sens: NDArray[np.float64], points: NDArray[np.float64]
) -> NDArray[np.float64]:
    return np.interp(points, fps, sens)


def froc(
    candidates: Iterable[Candidate | Mapping[str, Any]],
    references: Iterable[Finding | Mapping[str, Any]],
    *,
    scan_ids: Sequence[str] | None = None,
    n_scans: int | None = None,
    excluded: Iterable[Finding | Mapping[str, Any]] | None = None,
    operating_points: Sequence[float] = LUNA16_OPERATING_POINTS,
    max_marks_per_scan: int = LUNA16_MAX_MARKS,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> FROCResult:
    """FROC analysis of point candidates against sphere references (LUNA16 rules).

    Give the evaluated scans as ``scan_ids`` (scans without findings or candidates still
    count in FP/scan), or only ``n_scans`` when every scan not named by a record is empty.
    ``bootstrap=0`` skips the confidence intervals.
    """
    cands = list(candidates)
    refs = list(references)
    excl = list(excluded or [])
    if scan_ids is None:
        if n_scans is None:
            raise InputError("give scan_ids (preferred) or n_scans", value=None)
        named = sorted({str(_get(r, "scan_id")) for r in [*cands, *refs, *excl]})
        if n_scans < len(named):
            raise InputError(
                f"n_scans is smaller than the {len(named)} scans named in the records",
                value=n_scans,
            )
        ids = named + [f"__empty_scan_{i}" for i in range(n_scans - len(named))]
    else:
        ids = [str(s) for s in scan_ids]
        if n_scans is not None and n_scans != len(ids):
            raise InputError("n_scans disagrees with len(scan_ids)", value=n_scans)
    if not ids:
        raise InputError("no scans to evaluate", value=0)
    if not 0 < confidence < 1:
        raise InputError("confidence must lie in (0, 1)", value=confidence)
    points = np.asarray(operating_points, dtype=float)
    entries, counts = _match(cands, refs, ids, excl, max_marks_per_scan)
    n = len(ids)
    if entries.gt.sum() == 0:
        raise InputError(
            "the reference holds no included finding: sensitivity is undefined", value=0
        )
    fps, sens, thr = froc_curve(entries.gt, entries.prob, entries.excluded, n)
    at = _read(fps, sens, points)

    cpm_ci = None
    at_ci = None
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        by_scan = [np.flatnonzero(entries.scan == i) for i in range(n)]
        reps = np.empty((bootstrap, points.size))
        for b in range(bootstrap):
            pick = rng.integers(n, size=n)
            idx = np.concatenate([by_scan[i] for i in pick])
            f_b, s_b, _ = froc_curve(entries.gt[idx], entries.prob[idx], entries.excluded[idx], n)
            reps[b] = _read(f_b, s_b, points)
        # A replicate without any nodule has no sensitivity; it is left out of the interval.
        reps = reps[~np.isnan(reps).any(axis=1)]
        if reps.shape[0] < bootstrap:
            logger.warning("%d bootstrap replicates had no nodule", bootstrap - reps.shape[0])
        cpm_ci = _order_ci(reps.mean(axis=1), confidence)
        at_ci = [_order_ci(reps[:, k], confidence) for k in range(points.size)]

    c = list(counts.values())
    return FROCResult(
        fps=fps.tolist(),
        sensitivities=sens.tolist(),
        thresholds=thr.tolist(),
        operating_points=points.tolist(),
        sensitivity_at=at.tolist(),
        cpm=float(at.mean()),
        n_scans=n,
        n_nodules=sum(x.n_nodules for x in c),
        n_detected=sum(x.n_detected for x in c),
        n_false_positives=sum(x.n_false_positives for x in c),
        n_ignored_excluded=sum(x.n_ignored_excluded for x in c),
        n_double_hits=sum(x.n_double_hits for x in c),
        n_marks_dropped=sum(x.n_marks_dropped for x in c),
        bootstrap=bootstrap,
        confidence=confidence,
        seed=seed,
        cpm_ci=cpm_ci,
        sensitivity_at_ci=at_ci,
    )


def _order_ci(values: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    """Interval from sorted replicates at floor(a/2*B), floor((1-a/2)*B) as the LUNA16 script."""
    if values.size == 0:
        return (math.nan, math.nan)
    v = np.sort(values)
    pz = (1.0 - confidence) / 2.0
    lo = v[min(math.floor(pz * v.size), v.size - 1)]
    hi = v[min(math.floor((1.0 - pz) * v.size), v.size - 1)]
    return (float(lo), float(hi))


def luna16_cpm(
    candidates: Iterable[Candidate | Mapping[str, Any]],
    references: Iterable[Finding | Mapping[str, Any]],
    *,
    scan_ids: Sequence[str] | None = None,
    n_scans: int | None = None,
    excluded: Iterable[Finding | Mapping[str, Any]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> FROCResult:
    """LUNA16 CPM: mean sensitivity at 1/8..8 FP/scan, 100 marks/scan, 95 % bootstrap CI."""
    return froc(
        candidates,
        references,
        scan_ids=scan_ids,
        n_scans=n_scans,
        excluded=excluded,
        operating_points=LUNA16_OPERATING_POINTS,
        max_marks_per_scan=LUNA16_MAX_MARKS,
        bootstrap=bootstrap,
        confidence=0.95,
        seed=seed,
    )


def scan_counts(
    candidates: Iterable[Candidate | Mapping[str, Any]],
    references: Iterable[Finding | Mapping[str, Any]],
    *,
    scan_ids: Sequence[str],
    excluded: Iterable[Finding | Mapping[str, Any]] | None = None,
    max_marks_per_scan: int = LUNA16_MAX_MARKS,
    threshold: float | None = None,
) -> dict[str, ScanCounts]:
    """Per-scan nodules, detections and false positives under the LUNA16 matching rules.

    With ``threshold``, only candidates with probability >= threshold are counted (an
    operating point); without it every kept candidate counts.
    """
    ids = [str(s) for s in scan_ids]
    _, counts = _match(
        list(candidates),
        list(references),
        ids,
        list(excluded or []),
        max_marks_per_scan,
        min_probability=threshold,
    )
    return counts
