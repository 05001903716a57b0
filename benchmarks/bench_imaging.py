"""DICOM series -> Image -> NIfTI speed against the least any reader must do, and dcm2niix.

Series: a 512x512 CT slice from the pydicom-data wheel (693_UNCR.dcm), copied into N
slices with shifted positions (uncompressed, little endian). Measured per run:
- floor: pydicom.dcmread + pixel_array per file, np.stack (no sorting, no rescale);
- read_dicom_series: sort by position, checks, rescale into one buffer;
- write_nifti of that Image to .nii (uncompressed);
- dcm2niix -z n on the same folder (a separate process, includes its start-up).

    .venv/bin/python benchmarks/bench_imaging.py [--slices 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from medarena.imaging import read_dicom_series, write_nifti

SOURCE = Path(__import__("data_store").__file__).parent / "data" / "693_UNCR.dcm"


def make_series(folder: Path, n: int) -> list[Path]:
    base = pydicom.dcmread(SOURCE)
    uid = generate_uid()
    z0 = float(base.ImagePositionPatient[2])
    files = []
    for k in range(n):
        base.SeriesInstanceUID = uid
        base.SOPInstanceUID = generate_uid()
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.ImagePositionPatient = [*base.ImagePositionPatient[:2], z0 + 1.25 * k]
        path = folder / f"{(k * 7919) % n:05d}.dcm"
        base.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def best_of(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dicom"
        src.mkdir()
        files = make_series(src, args.slices)
        mb = sum(f.stat().st_size for f in files) / 1e6

        def floor() -> None:
            np.stack([pydicom.dcmread(f).pixel_array for f in files])

        floor_s = best_of(args.repeat, floor)
        ours_s = best_of(args.repeat, lambda: read_dicom_series(files))
        img = read_dicom_series(files)
        write_s = best_of(args.repeat, lambda: write_nifti(img, Path(tmp) / "ours.nii"))
        d2n = shutil.which("dcm2niix")
        d2n_s = float("nan")
        if d2n:
            out = Path(tmp) / "d2n"
            out.mkdir()

            def run_d2n() -> None:
                subprocess.run(
                    [d2n, "-z", "n", "-b", "n", "-w", "1", "-o", str(out), str(src)],
                    check=True,
                    capture_output=True,
                )

            d2n_s = best_of(args.repeat, run_d2n)
    print(f"series: {args.slices} slices 512x512 int16, {mb:.0f} MB; best of {args.repeat}")
    print(f"floor (dcmread + pixel_array + stack): {floor_s:.3f} s")
    print(f"read_dicom_series:                     {ours_s:.3f} s ({ours_s / floor_s:.2f}x floor)")
    print(f"write_nifti (.nii):                    {write_s:.3f} s")
    print(f"read + write:                          {ours_s + write_s:.3f} s")
    print(f"dcm2niix -z n (process):               {d2n_s:.3f} s")


if __name__ == "__main__":
    main()
