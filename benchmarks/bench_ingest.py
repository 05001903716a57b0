"""De-identification + ingest throughput against a plain pydicom read + write.

Floor: for each file, pydicom.dcmread + Dataset.save_as to a buffer (the least any
tool that rewrites DICOM must do). Measured: `medarena.datasets.ingest` of the
same files into a fresh catalogue (header pass, de-identification, store,
volume build, database rows). Both run in this process on the same files.

    .venv/bin/python benchmarks/bench_ingest.py [--series 40] [--slices 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from medarena.config import get_settings
from medarena.datasets.catalogue import open_catalogue
from medarena.datasets.ingest import ingest
from medarena_testkit import make_ct_series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files: list[Path] = []
        for i in range(args.series):
            files += make_ct_series(root / "in" / f"s{i}", patient_id=f"P{i % 7}", n=args.slices)
        total_mb = sum(f.stat().st_size for f in files) / 1e6

        def floor_run() -> float:
            t0 = time.perf_counter()
            for f in files:
                ds = pydicom.dcmread(f)
                ds.save_as(io.BytesIO(), enforce_file_format=True)
            return time.perf_counter() - t0

        def ingest_run(i: int) -> float:
            cat = open_catalogue(get_settings(data_dir=root / f"data{i}"))
            t0 = time.perf_counter()
            summary = ingest(cat, root / "in", "bench")
            elapsed = time.perf_counter() - t0
            cat.close()
            assert summary.files_stored == len(files), summary.issues[:3]
            return elapsed

        # Alternate the two in this process and keep the best of each (shared machine).
        floors, ours_runs = [], []
        for i in range(args.repeat):
            floors.append(floor_run())
            ours_runs.append(ingest_run(i))
        floor, ours = min(floors), min(ours_runs)

        n = len(files)
        print(f"files: {n} ({total_mb:.1f} MB) in {args.series} series")
        print(f"floor  pydicom read+write : {n / floor:8.1f} files/s {total_mb / floor:7.1f} MB/s")
        print(f"medarena deid + ingest    : {n / ours:8.1f} files/s {total_mb / ours:7.1f} MB/s")
        print(f"ratio ingest / floor      : {ours / floor:.2f}x")


if __name__ == "__main__":
    main()
