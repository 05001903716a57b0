"""Benchmark: de-identification (read + deid + write) vs a plain pydicom read + write.

Usage: .venv/bin/python benchmarks/bench_deid.py [N]

Makes N copies of real sample files (pydicom's CT_small/MR_small and pydicom-data's
MR2_UNCR/693_UNCR), then, in the same process, times a plain ``dcmread`` +
``save_as`` of every copy and the de-identification of the same copies
(``deidentify_file``: read, classify, apply Table E.1-1, write). Prints files/s,
MB/s and the ratio deid / plain (target: at most 2).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import data_store
from pydicom import dcmread
from pydicom.data import get_testdata_file

from medarena.dicom.deid import DeidContext, DeidOptions, deidentify_file

SOURCES = [
    Path(str(get_testdata_file("CT_small.dcm"))),
    Path(str(get_testdata_file("MR_small.dcm"))),
    Path(data_store.__file__).parent / "data" / "MR2_UNCR.dcm",
    Path(data_store.__file__).parent / "data" / "693_UNCR.dcm",
]


def _plain(files: list[Path], out: Path) -> float:
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        dcmread(f).save_as(out / f"{i}.dcm", enforce_file_format=True)
    return time.perf_counter() - t0


def _deid(files: list[Path], out: Path, ctx: DeidContext) -> float:
    t0 = time.perf_counter()
    for f in files:
        result = deidentify_file(f, out, ctx, f.name)
        assert result.status == "done", result
    return time.perf_counter() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    work = Path(tempfile.mkdtemp(prefix="bench_deid_"))
    try:
        src = work / "in"
        src.mkdir()
        files = []
        for i in range(n):
            target = src / f"{i:05d}.dcm"
            shutil.copy(SOURCES[i % len(SOURCES)], target)
            files.append(target)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        ctx = DeidContext.create(DeidOptions(), b"benchmark-secret-0123456789abcdef")
        results: dict[str, list[float]] = {"plain": [], "deid": []}
        for rep in range(3):  # alternate, keep the best of each to damp noise
            for kind in ("plain", "deid"):
                out = work / f"out_{kind}_{rep}"
                out.mkdir()
                secs = _plain(files, out) if kind == "plain" else _deid(files, out, ctx)
                results[kind].append(secs)
                shutil.rmtree(out)
        plain, deid = min(results["plain"]), min(results["deid"])
        print(f"files: {n} ({total_mb:.1f} MB), sources: {', '.join(s.name for s in SOURCES)}")
        for label, secs in (("plain read+write", plain), ("deid read+deid+write", deid)):
            print(
                f"{label:22s} {secs:7.3f} s  {n / secs:8.1f} files/s  {total_mb / secs:7.1f} MB/s"
            )
        print(f"ratio deid / plain: {deid / plain:.2f} (target <= 2)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
