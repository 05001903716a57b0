"""De-identify a folder tree of DICOM files into an output folder.

Output layout: ``OUT/<study UID>/<series UID>/<SOP instance UID>.dcm`` with the new
(de-identified) UIDs, so no original folder or file name, which may hold a patient
name, reaches the research output. Quarantined and rejected files are never
written: they stay where they are in IN and the summary names them by their path
relative to IN with the reason. Non-DICOM files, DICOMDIRs and corrupt or truncated
files are reported as rejected and the walk goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medarena.config import Settings
from medarena.dicom.deid.engine import DeidContext, Status
from medarena.dicom.deid.procedure import DeidOptions
from medarena.errors import InputError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class FileResult:
    """What happened to one input file (``path`` is relative to IN, POSIX style)."""

    path: str
    status: Status
    reason: str | None = None
    output: str | None = None


@dataclass
class DeidSummary:
    """Per-file results of a tree run."""

    results: list[FileResult] = field(default_factory=list)
    bytes_in: int = 0

    def _with(self, status: Status) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[FileResult]:
        return self._with("done")

    @property
    def quarantined(self) -> list[FileResult]:
        return self._with("quarantined")

    @property
    def rejected(self) -> list[FileResult]:
        return self._with("rejected")

    @property
    def all_done(self) -> bool:
        return all(r.status == "done" for r in self.results)


def _iter_files(root: Path, skip: Path | None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None:
            dirnames[:] = [d for d in dirnames if (here / d).resolve() != skip]
        dirnames.sort()
        for name in sorted(filenames):
            yield here / name


_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
# Image storage classes must carry pixel data; RT structure sets and plans carry none.
_NO_PIXEL_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.481.3",
        "1.2.840.10008.5.1.4.1.1.481.5",
        "1.2.840.10008.5.1.4.1.1.481.8",
    }
)


def _truncation(ds: Dataset) -> str | None:
    """Why ``ds`` looks cut short, or None. pydicom stops quietly at end of file."""
    tags = list(ds.keys())
    if tags:
        raw = ds.get_item(tags[-1])
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if (
            isinstance(value, bytes)
            and length is not None
            and length != _UNDEFINED_LENGTH
            and len(value) < length
        ):
            return "the last element is shorter than its declared length"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class in _NO_PIXEL_CLASSES:
        return None
    if not any(t in ds for t in _PIXEL_TAGS):
        if "Rows" in ds or sop_class.startswith("1.2.840.10008.5.1.4.1.1."):
            return "an image object without pixel data"
        return None
    if 0x7FE00010 in ds and not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            bits = int(ds.BitsAllocated) * int(ds.Rows) * int(ds.Columns)
            bits *= int(ds.get("SamplesPerPixel", 1) or 1) * frames
        except (AttributeError, TypeError, ValueError):
            return "pixel data without a valid Rows/Columns/Bits Allocated description"
        if len(ds.get_item(0x7FE00010).value or b"") < (bits + 7) // 8:
            return "pixel data shorter than Rows x Columns x frames needs"
    return None


def deidentify_file(path: Path, out_dir: Path, ctx: DeidContext, rel: str) -> FileResult:
    """Read, de-identify and write one file; every failure becomes a rejected result."""
    try:
        try:
            ds = dcmread(path)
        except InvalidDicomError:
            # Some archives write bare datasets without the Part 10 header; accept them
            # only if they parse and name a SOP class, otherwise it is not DICOM.
            ds = dcmread(path, force=True)
            if "SOPClassUID" not in ds or not str(ds.get("SOPClassUID", "")).startswith("1."):
                return FileResult(
                    rel, "rejected", "not a DICOM file (no DICM prefix, no SOP class)"
                )
    except Exception as exc:  # pydicom raises many types on corrupt input
        return FileResult(rel, "rejected", f"corrupt or truncated DICOM ({type(exc).__name__})")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10":
        return FileResult(rel, "rejected", "DICOMDIR (media directory), holds no image")
    problem = _truncation(ds)
    if problem is not None:
        return FileResult(rel, "rejected", f"truncated DICOM: {problem}")
    try:
        outcome = ctx.deidentify(ds)
    except Exception as exc:
        # Conversion of a damaged element fails only when it is touched; the file is
        # rejected rather than written half-cleaned.
        logger.warning("de-identification failed for a file (%s)", type(exc).__name__)
        return FileResult(rel, "rejected", f"corrupt DICOM content ({type(exc).__name__})")
    if outcome.status != "done" or outcome.dataset is None:
        return FileResult(rel, outcome.status, outcome.reason)
    out = outcome.dataset
    target_rel = Path(str(out.StudyInstanceUID)) / str(out.SeriesInstanceUID)
    target_rel = target_rel / f"{out.SOPInstanceUID}.dcm"
    target = out_dir / target_rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".dcm.part")
    try:
        out.save_as(tmp, enforce_file_format=True)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        return FileResult(
            rel, "rejected", f"cannot be written as valid DICOM ({type(exc).__name__})"
        )
    os.replace(tmp, target)
    return FileResult(rel, "done", None, target_rel.as_posix())


def deidentify_tree(
    in_dir: Path,
    out_dir: Path,
    options: DeidOptions,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    ctx: DeidContext | None = None,
) -> DeidSummary:
    """De-identify every file under ``in_dir`` into ``out_dir``; never stops on a bad file.

    ``progress(done, total, rel_path)`` is called after each file. ``ctx`` may be
    given to share one context (and identity map) across calls; by default it is
    built from ``settings`` (project secret, UID root, identity database).
    """
    in_dir = Path(in_dir)
    out_dir = Path(out_dir)
    if not in_dir.is_dir():
        raise InputError("input must be an existing directory", path=in_dir)
    out_resolved = out_dir.resolve()
    if out_resolved == in_dir.resolve():
        raise InputError("output directory must differ from the input directory", path=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = ctx or DeidContext.from_settings(settings, options)
    files = list(_iter_files(in_dir, out_resolved))
    summary = DeidSummary()
    for i, path in enumerate(files, start=1):
        rel = path.relative_to(in_dir).as_posix()
        summary.bytes_in += path.stat().st_size
        summary.results.append(deidentify_file(path, out_dir, context, rel))
        if progress is not None:
            progress(i, len(files), rel)
    logger.info(
        "de-identified %d files: %d done, %d quarantined, %d rejected",
        len(summary.results),
        len(summary.done),
        len(summary.quarantined),
        len(summary.rejected),
    )
    return summary
