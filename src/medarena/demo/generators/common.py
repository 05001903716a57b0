"""What every demo generator shares: its result record, subject metadata and byte-stable writers.

Determinism: every random draw comes from ``numpy.random.default_rng`` seeded by the
generator's seed and the case index; NIfTI files are gzip-compressed with a zero timestamp
and no file name in the gzip header, and CSV rows are sorted, so the same seed gives the same
bytes.

Layout written by :func:`write_msd_layout` (accepted as is by ``medarena ingest``, see
docs/data-hub.md): ``dataset.json``, ``imagesTr/<case>_<channel>.nii.gz``,
``labelsTr/<case>.nii.gz``, ``imagesTs/…``, ``labelsTs/…`` and ``metadata.csv`` with the
ingest attribute columns ``case_id, sex, age, site, manufacturer``. Case ids never end in
``_NNNN`` (that suffix is the channel number).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from medarena.errors import InputError

Size = Literal["demo", "tiny"]
SIZES: tuple[str, ...] = ("demo", "tiny")
METADATA_COLUMNS = ("case_id", "sex", "age", "site", "manufacturer")
# size -> (voxels per axis, voxel size in mm) of a generator's 3-D grid
Grids = dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]]


@dataclass(frozen=True)
class GeneratedTrack:
    """What a generator wrote, to be shown wherever the data is shown.

    ``ingest_dir`` is the folder ``medarena ingest`` takes as is; ``reference`` is what
    ``medarena evaluate --task <task> --reference`` takes for the test cases (a folder or a
    CSV, in the task's format); ``files`` are paths relative to ``root``.
    """

    track: str
    task: str
    task_config: Mapping[str, Any]
    root: Path
    ingest_dir: Path
    reference: Path
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    files: tuple[str, ...]
    channels: tuple[str, ...]
    label_names: Mapping[str, str]
    real_parts: tuple[str, ...]
    synthetic_parts: tuple[str, ...]
    seed: int
    size: str
    notes: Mapping[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        """A JSON-ready description (paths relative to ``root``)."""
        d = asdict(self)
        d["root"] = "."
        d["ingest_dir"] = str(self.ingest_dir.relative_to(self.root))
        d["reference"] = str(self.reference.relative_to(self.root))
        return d


@dataclass(frozen=True)
class Subject:
    """Metadata of one generated case (the columns ingest records as case attributes)."""

    case_id: str
    sex: str
    age: int
    site: str
    manufacturer: str
    test: bool


def check_args(n_train: int, n_test: int, seed: int, size: str) -> None:
    """Refuse counts, seeds and sizes a generator cannot honour, naming the field."""
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, int) or value < 0:
            raise InputError(f"{name} must be a non-negative whole number", value=value)
    if n_train + n_test == 0:
        raise InputError("n_train + n_test must be at least 1", value=(n_train, n_test))
    if not isinstance(seed, int) or seed < 0:
        raise InputError("seed must be a non-negative whole number", value=seed)
    if size not in SIZES:
        raise InputError(f"size must be one of {', '.join(SIZES)}", value=size)


def check_out_dir(out_dir: Path) -> Path:
    """Refuse an output folder that already holds files: stale cases would mix with new ones."""
    root = Path(out_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(
            "out_dir must be a missing or empty folder (a generator never mixes its cases "
            "with files already there); remove it or choose another",
            path=root,
        )
    return root


def case_rng(seed: int, track: str, index: int) -> np.random.Generator:
    """The random stream of one case: independent of the other cases and of the case count."""
    # The whole name is hashed: "brain_age" and "brain_age/meta" must not share a stream,
    # or a subject's image parameters would be a function of its age and sex.
    salt = int.from_bytes(hashlib.sha256(track.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, salt, index])


@dataclass(frozen=True)
class Cohort:
    """Who a track's cases are: case ids ``<prefix>-NNNN``, sites with their vendors, ages."""

    track: str
    prefix: str
    sites: Mapping[str, str]
    age_range: tuple[int, int]


def vendors(sites: Mapping[str, tuple[Any, ...]]) -> dict[str, str]:
    """Each site's scanner vendor, from a site table whose rows start with the vendor."""
    return {site: str(row[0]) for site, row in sites.items()}


def begin(
    cohort: Cohort, out_dir: Path, n_train: int, n_test: int, seed: int, size: str
) -> tuple[Path, list[Subject]]:
    """What every generator does first: check its arguments and folder, then draw the subjects.

    Returns the output folder and the subjects (see :func:`draw_subjects`).
    """
    check_args(n_train, n_test, seed, size)
    root = check_out_dir(out_dir)
    c = cohort
    return root, draw_subjects(seed, c.track, c.prefix, n_train, n_test, c.sites, c.age_range)


def split_ids(subjects: Sequence[Subject]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The case ids of the training subjects and of the test subjects, in subject order."""
    return (
        tuple(s.case_id for s in subjects if not s.test),
        tuple(s.case_id for s in subjects if s.test),
    )


def image_dir(ingest_dir: Path, subject: Subject) -> Path:
    """``imagesTs`` for a test subject, ``imagesTr`` otherwise (below ``ingest_dir``)."""
    return ingest_dir / ("imagesTs" if subject.test else "imagesTr")


def draw_subjects(
    seed: int,
    track: str,
    prefix: str,
    n_train: int,
    n_test: int,
    sites: Mapping[str, str],
    age_range: tuple[int, int] = (25, 85),
) -> list[Subject]:
    """Sex, age and a site (with its scanner vendor) for each case, cycling over the sites.

    Sites are assigned in turn so every site appears in both subsets when there are enough
    cases; ``sites`` maps a site name to its scanner manufacturer.
    """
    names = sorted(sites)
    out = []
    for i in range(n_train + n_test):
        rng = case_rng(seed, track + "/meta", i)
        site = names[i % len(names)]
        out.append(
            Subject(
                case_id=f"{prefix}-{i + 1:04d}",
                sex="F" if rng.random() < 0.5 else "M",
                age=int(rng.integers(age_range[0], age_range[1] + 1)),
                site=site,
                manufacturer=sites[site],
                test=i >= n_train,
            )
        )
    return out


def nifti_bytes(array: NDArray[Any], spacing: Sequence[float]) -> bytes:
    """A gzip-compressed NIfTI-1 file with a fixed header (diagonal affine in mm, no text)."""
    affine = np.diag([*(float(s) for s in spacing[:3]), 1.0])
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0)


def write_nifti(path: Path, array: NDArray[Any], spacing: Sequence[float]) -> Path:
    """Write :func:`nifti_bytes` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nifti_bytes(array, spacing))
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV with ``\\n`` line endings and rows sorted, so its bytes depend only on the data."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(sorted([_cell(v) for v in row] for row in rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_metadata(
    path: Path,
    subjects: Sequence[Subject],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    age_is_target: bool = False,
) -> Path:
    """``metadata.csv``: the ingest attribute columns of every case, then ``extra`` columns.

    ``extra[case_id][column]`` become case-level labels at ingest (e.g. a nodule count).
    With ``age_is_target`` (brain age) the age of test cases is left empty: attributes are
    shown to participants, and a hidden case's age would be its hidden label.
    """
    extra = extra or {}
    cols = sorted({k for row in extra.values() for k in row})
    return write_csv(
        path,
        [*METADATA_COLUMNS, *cols],
        [
            (
                s.case_id,
                s.sex,
                "" if age_is_target and s.test else s.age,
                s.site,
                s.manufacturer,
                *(extra.get(s.case_id, {}).get(c, "") for c in cols),
            )
            for s in subjects
        ],
    )


def write_dataset_json(
    ingest_dir: Path,
    *,
    name: str,
    description: str,
    channels: Sequence[str],
    subjects: Sequence[Subject],
    suffix: str,
) -> Path:
    """``dataset.json`` of an image-only MSD folder (case labels come from a CSV instead)."""
    train, test = split_ids(subjects)
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": "2D" if suffix == ".png" else "3D",
        "modality": {str(i): c for i, c in enumerate(channels)},
        "labels": {},
        "numTraining": len(train),
        "numTest": len(test),
        "training": [{"image": f"./imagesTr/{c}{suffix}"} for c in train],
        "test": [f"./imagesTs/{c}{suffix}" for c in test],
    }
    path = ingest_dir / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def write_msd_layout(
    ingest_dir: Path,
    *,
    name: str,
    description: str,
    channels: Sequence[str],
    label_names: Mapping[str, str],
    subjects: Sequence[Subject],
    images: Mapping[str, Sequence[NDArray[Any]]],
    labels: Mapping[str, NDArray[Any]],
    spacing: Sequence[float] | Mapping[str, Sequence[float]],
    extra_columns: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write a Medical Segmentation Decathlon folder with test labels in ``labelsTs``.

    ``images[case_id]`` holds one array per channel, ``labels[case_id]`` the label map;
    ``spacing`` is one voxel size for all cases or one per case id.
    """
    written: list[Path] = []
    for s in subjects:
        sp = spacing[s.case_id] if isinstance(spacing, Mapping) else spacing
        lab_dir = "labelsTs" if s.test else "labelsTr"
        for ch, arr in enumerate(images[s.case_id]):
            written.append(
                write_nifti(image_dir(ingest_dir, s) / f"{s.case_id}_{ch:04d}.nii.gz", arr, sp)
            )
        written.append(
            write_nifti(ingest_dir / lab_dir / f"{s.case_id}.nii.gz", labels[s.case_id], sp)
        )
    train, test = split_ids(subjects)
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {str(i): c for i, c in enumerate(channels)},
        "labels": dict(label_names),
        "numTraining": len(train),
        "numTest": len(test),
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train
        ],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test],
    }
    js = ingest_dir / "dataset.json"
    js.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(js)
    written.append(write_metadata(ingest_dir / "metadata.csv", subjects, extra_columns))
    return written


def copy_test_labels(written: Iterable[Path], ref_dir: Path) -> Path:
    """Copy the ``labelsTs`` files among ``written`` into ``ref_dir`` (a label-map reference)."""
    ref_dir.mkdir(parents=True, exist_ok=True)
    for p in written:
        if p.parent.name == "labelsTs":
            shutil.copyfile(p, ref_dir / p.name)
    return ref_dir


def finish(track: GeneratedTrack) -> GeneratedTrack:
    """Write ``track.json`` (the manifest) next to the data and return the track."""
    path = track.root / "track.json"
    path.write_text(json.dumps(track.manifest(), indent=2, sort_keys=True) + "\n")
    return track


def write_csv_labelled_folder(
    ingest_dir: Path,
    *,
    name: str,
    description: str,
    channels: Sequence[str],
    subjects: Sequence[Subject],
    suffix: str,
    labels_file: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    age_is_target: bool = False,
) -> Path:
    """The non-image files of an image-only folder whose case labels come from a CSV.

    Writes ``dataset.json``, ``metadata.csv`` and ``labels_file`` (``header`` then ``rows``,
    one a case); the images themselves are the generator's to write. Returns the labels CSV.
    """
    write_dataset_json(
        ingest_dir,
        name=name,
        description=description,
        channels=channels,
        subjects=subjects,
        suffix=suffix,
    )
    write_metadata(ingest_dir / "metadata.csv", subjects, age_is_target=age_is_target)
    return write_csv(ingest_dir / labels_file, header, rows)


def describe(
    root: Path,
    subjects: Sequence[Subject],
    *,
    track: str,
    task: str,
    task_config: Mapping[str, Any],
    ingest_dir: Path,
    reference: Path,
    channels: tuple[str, ...],
    label_names: Mapping[str, str],
    real_parts: tuple[str, ...],
    synthetic_parts: tuple[str, ...],
    seed: int,
    size: str,
    notes: Mapping[str, Any],
) -> GeneratedTrack:
    """What every generator does last: describe what it wrote and write ``track.json``.

    The split comes from ``subjects`` and ``files`` lists everything under ``root`` (taken
    before ``track.json`` is written, so the manifest does not list itself).
    """
    train_ids, test_ids = split_ids(subjects)
    return finish(
        GeneratedTrack(
            track=track,
            task=task,
            task_config=task_config,
            root=root,
            ingest_dir=ingest_dir,
            reference=reference,
            train_ids=train_ids,
            test_ids=test_ids,
            files=relative_files(root),
            channels=channels,
            label_names=label_names,
            real_parts=real_parts,
            synthetic_parts=synthetic_parts,
            seed=seed,
            size=size,
            notes=notes,
        )
    )


def relative_files(root: Path) -> tuple[str, ...]:
    """Every file under ``root`` as a sorted tuple of relative paths."""
    return tuple(sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))


def ball(
    shape: Sequence[int], centre: Sequence[float], radius_vox: Sequence[float]
) -> NDArray[np.bool_]:
    """Voxels whose centres lie inside the ellipsoid (centre and semi-axes in voxels)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius_vox, strict=True))
    return np.asarray(d <= 1.0)
