"""Find what a folder holds: DICOM files, NIfTI volumes, 2D images, label files.

Classification is by name first (cheap) and by content for everything else:
a file is DICOM if pydicom can parse its header. Layouts recognised:
- Medical Segmentation Decathlon / nnU-Net raw: ``dataset.json`` with
  ``imagesTr``, ``labelsTr``, ``imagesTs``; nnU-Net channel files
  ``<case>_0000.nii.gz`` are grouped into one case.
- Generic: every NIfTI or 2D image is a case; files under a folder named
  ``labels``, ``labelsTr``, ``masks`` or ``segmentations`` are label maps paired
  with the image of the same case id.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LABEL_DIRS = {"labels", "labelstr", "labelsts", "masks", "segmentations", "labels_tr"}
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
_IGNORED = {".ds_store", "thumbs.db", "dataset.json", "readme", "readme.md", "license"}


def case_id_of(path: Path) -> str:
    """File name without its (double) extension: the case id contract of medarena."""
    name = path.name
    for suf in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES, ".dcm", ".csv"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


@dataclass
class VolumeCase:
    """A NIfTI or 2D-image case: its channel files and optional label file."""

    key: str
    images: list[Path] = field(default_factory=list)
    label: Path | None = None
    subset_hint: str | None = None  # "train" / "test" from an MSD layout


@dataclass
class Discovered:
    dicom_candidates: list[Path] = field(default_factory=list)
    volume_cases: dict[str, VolumeCase] = field(default_factory=dict)
    orphan_labels: list[Path] = field(default_factory=list)
    csv_files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def discover(root: Path) -> Discovered:
    """Walk ``root`` (a file or folder) and sort its files by kind."""
    found = Discovered()
    if not root.exists():
        found.unreadable.append((root, "path does not exist"))
        return found
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if not p.is_dir())
    labels: dict[str, Path] = {}
    channels: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    msd = root.is_dir() and (root / "dataset.json").is_file()
    for p in paths:
        lname = p.name.lower()
        if p.is_symlink() and not p.resolve().is_relative_to(root.resolve()):
            found.unreadable.append((p, "symbolic link pointing outside the ingested folder"))
            continue
        if lname in _IGNORED or lname.startswith("._"):
            continue
        try:
            p.stat()
        except OSError as exc:
            found.unreadable.append((p, f"cannot read file: {exc.strerror}"))
            continue
        parent = p.parent.name.lower()
        if lname.endswith(NIFTI_SUFFIXES) or lname.endswith(RASTER_SUFFIXES):
            key = case_id_of(p)
            if parent in LABEL_DIRS:
                labels[key] = p
                continue
            m = _CHANNEL_RE.match(key) if msd else None
            if m:
                channels[m["case"]].append((int(m["ch"]), p))
                key = m["case"]
            else:
                channels[key].append((0, p))
            if msd and parent in ("imagests",):
                found.volume_cases.setdefault(key, VolumeCase(key, subset_hint="test"))
            continue
        if lname.endswith(".csv"):
            found.csv_files.append(p)
            continue
        found.dicom_candidates.append(p)
    for key, chans in channels.items():
        vc = found.volume_cases.setdefault(key, VolumeCase(key))
        chans.sort()
        nums = [c for c, _ in chans]
        if len(set(nums)) != len(nums):
            found.unreadable.extend(
                (p, f"case id {key!r} appears in more than one image file") for _, p in chans[1:]
            )
            chans = chans[:1]
        vc.images = [p for _, p in chans]
        if msd and vc.subset_hint is None:
            vc.subset_hint = "train"
    for key, p in labels.items():
        if key in found.volume_cases:
            found.volume_cases[key].label = p
        else:
            found.orphan_labels.append(p)
    return found
