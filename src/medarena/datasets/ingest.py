"""Ingest a folder of DICOM, NIfTI or 2D images (plus labels) into a dataset.

Every DICOM object is de-identified (PS3.15 Annex E, see medarena.dicom.deid)
before anything is stored. NIfTI and 2D images are re-encoded from their pixels
and geometry, so no free-text header field or image metadata chunk survives.

Ingest is idempotent by content hash: a source file whose sha256 is already
recorded for the dataset is skipped. Each case is written in one database
transaction after its objects are in the content-addressed store, so an ingest
killed half-way leaves only complete cases; re-running it completes the rest
and adds no duplicates (de-identification is deterministic, so the objects it
stores again have the same digests).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import math
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydantic import BaseModel
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.datasets.catalogue import Catalogue
from medarena.datasets.dicom_meta import DerivedMetadata, derived_metadata
from medarena.datasets.sources import VolumeCase, case_id_of, discover
from medarena.db.models import Case, CaseObject, Dataset, IngestedSource
from medarena.dicom.deid import DeidContext, DeidOptions
from medarena.dicom.deid.tree import _truncation as truncation_reason
from medarena.errors import InputError, MedarenaError
from medarena.imaging import (
    Image,
    image_from_datasets,
    read_dicom_series,
    read_image,
    write_nifti,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
NIFTI_MEDIA_TYPE = "application/x-nifti+gzip"
ATTRIBUTE_COLUMNS = {"sex", "age", "age_years", "site", "manufacturer", "modality", "body_part"}


class IngestOptions(BaseModel):
    """What an ingest does besides reading the files."""

    description: str = ""
    site: str | None = None
    labels_csv: Path | None = None
    # A research data hub keeps what later analysis needs: shifted dates, sex and age,
    # cleaned descriptions (each a PS3.15 option, recorded in every object).
    deid: DeidOptions = DeidOptions(
        retain_modified_dates=True, retain_patient_characteristics=True, clean_descriptors=True
    )


@dataclass
class FileIssue:
    path: str
    outcome: str  # rejected | quarantined
    reason: str


@dataclass
class IngestSummary:
    dataset: str
    cases_added: int = 0
    cases_updated: int = 0
    files_stored: int = 0
    files_skipped: int = 0
    labels_applied: int = 0
    issues: list[FileIssue] = field(default_factory=list)

    @property
    def rejected(self) -> list[FileIssue]:
        return [i for i in self.issues if i.outcome == "rejected"]

    @property
    def quarantined(self) -> list[FileIssue]:
        return [i for i in self.issues if i.outcome == "quarantined"]


def _sha256_file(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data


class _Run:
    """State of one ingest run."""

    def __init__(
        self, cat: Catalogue, root: Path, dataset: str, opts: IngestOptions, progress: ProgressFn
    ) -> None:
        self.cat = cat
        self.root = root
        self.opts = opts
        self.progress = progress
        self.summary = IngestSummary(dataset)
        self.deid = DeidContext.from_settings(cat.settings, opts.deid)
        with cat.session() as s, s.begin():
            ds = s.scalars(select(Dataset).where(Dataset.name == dataset)).one_or_none()
            if ds is None:
                ds = Dataset(
                    name=dataset,
                    description=opts.description,
                    deid_procedure=self.deid.procedure.label,
                )
                s.add(ds)
                s.flush()
            self.dataset_id = ds.id
            self.known = set(
                s.scalars(
                    select(IngestedSource.sha256).where(IngestedSource.dataset_id == ds.id)
                ).all()
            )

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root if self.root.is_dir() else self.root.parent))
        except ValueError:
            return str(path)

    def issue(self, path: Path, outcome: str, reason: str) -> None:
        self.summary.issues.append(FileIssue(self.rel(path), outcome, reason))
        # Paths and reasons go to the summary the steward sees, not to the log: folder
        # and file names at a hospital often carry patient names.
        log.info("a file was %s during ingest", outcome)

    def site_label(self, institution: str | None) -> str | None:
        """The site of a case: given by the steward, else a keyed pseudonym of the institution."""
        if self.opts.site:
            return self.opts.site
        if not institution:
            return None
        mac = hmac.new(self.cat.settings.secret, b"site\x00" + institution.encode(), "sha256")
        return "site-" + mac.hexdigest()[:8]

    # ---------------------------------------------------------------- DICOM
    def ingest_dicom(self, candidates: list[Path]) -> None:
        """Read, de-identify and store DICOM files folder by folder, one case per series.

        Each file is read once. Files are grouped by their (de-identified) series UID
        within a folder, so memory holds one folder's series at a time; a series spread
        over several folders or runs is merged into its existing case.
        """
        by_dir: dict[Path, list[Path]] = defaultdict(list)
        for p in candidates:
            by_dir[p.parent].append(p)
        segs: list[_Staged] = []
        done = 0
        for folder in sorted(by_dir):
            series: dict[str, list[_Staged]] = defaultdict(list)
            for p in sorted(by_dir[folder]):
                done += 1
                self.progress("de-identifying DICOM", done, len(candidates))
                staged = self._deid_file(p)
                if staged is None:
                    continue
                if str(staged.dataset.get("SOPClassUID", "")) == SEG_SOP_CLASS:
                    segs.append(staged)
                else:
                    series[str(staged.dataset.get("SeriesInstanceUID", ""))].append(staged)
            for members in series.values():
                self._ingest_series(members)
        for staged in segs:
            try:
                self._attach_seg(staged.path, staged.dataset, staged.sha)
            except _Abort:
                continue

    def _deid_file(self, path: Path) -> _Staged | None:
        try:
            sha, data = _sha256_file(path)
        except OSError as exc:
            self.issue(path, "rejected", f"cannot read file: {exc}")
            return None
        if sha in self.known:
            self.summary.files_skipped += 1
            return None
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            truncated = truncation_reason(ds)
        except InvalidDicomError:
            self.issue(path, "rejected", "not a DICOM file (no valid DICOM header)")
            return None
        except Exception as exc:  # pydicom raises many types on corrupt input
            self.issue(path, "rejected", f"corrupt DICOM: {type(exc).__name__}: {exc}")
            return None
        if ds.file_meta.get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
            self.issue(
                path,
                "rejected",
                "DICOMDIR is a directory index, not an image; the "
                "files it lists are ingested from their own paths",
            )
            return None
        if truncated:
            self.issue(path, "rejected", f"truncated DICOM: {truncated}")
            return None
        derived = derived_metadata(ds)  # from the original header, before it is removed
        outcome = self.deid.deidentify(ds)
        if outcome.status != "done" or outcome.dataset is None:
            self.issue(path, outcome.status, outcome.reason or "not de-identified")
            return None
        return _Staged(path, outcome.dataset, sha, derived)

    def _ingest_series(self, staged: list[_Staged]) -> None:
        meta = staged[0].derived
        store = self.cat.store
        objects: list[tuple[str, int, str]] = []
        for st in staged:
            buf = io.BytesIO()
            st.dataset.save_as(buf, enforce_file_format=True)
            digest = store.put_bytes(buf.getvalue())
            # Named by the de-identified instance UID: source file names may identify.
            objects.append((digest, len(buf.getvalue()), f"{st.dataset.SOPInstanceUID}.dcm"))
        first = staged[0].dataset
        series_uid = str(first.SeriesInstanceUID)
        with self.cat.session() as s, s.begin():
            case = s.scalars(
                select(Case).where(
                    Case.dataset_id == self.dataset_id, Case.series_uid == series_uid
                )
            ).one_or_none()
            created = case is None
            if case is None:
                case = Case(
                    dataset_id=self.dataset_id,
                    case_key=_dicom_case_key(first),
                    source_format="dicom",
                    series_uid=series_uid,
                    study_uid=str(first.get("StudyInstanceUID", "")) or None,
                    patient_pseudonym=str(first.get("PatientID", "")) or None,
                    modality=str(first.get("Modality", "")) or None,
                    body_part=str(first.get("BodyPartExamined", "")) or None,
                    manufacturer=str(first.get("Manufacturer", "")) or None,
                    manufacturer_model=str(first.get("ManufacturerModelName", "")) or None,
                    sex=_sex(first.get("PatientSex")),
                    age_years=meta.age_years,
                    site=self.site_label(meta.institution),
                    study_date=str(first.get("StudyDate", "")) or None,
                )
                s.add(case)
                s.flush()
            have = {(o.role, o.digest) for o in case.objects}
            for digest, size, name in objects:
                if ("dicom", digest) not in have:
                    case.objects.append(
                        CaseObject(
                            role="dicom",
                            digest=digest,
                            size=size,
                            media_type="application/dicom",
                            name=name,
                        )
                    )
            s.flush()
            # Build the volume from every instance the case now has: from memory when
            # this run brought them all, else re-read the stored instances.
            dicom_digests = [o.digest for o in case.objects if o.role == "dicom"]
            try:
                if created:
                    image = image_from_datasets(
                        [st.dataset for st in staged], [st.path for st in staged]
                    )
                else:
                    image = read_dicom_series([store.path_of(d) for d in dicom_digests])
            except MedarenaError as exc:
                # The instances are stored and de-identified; the case keeps no volume.
                case.extra = {**case.extra, "volume_error": str(exc)}
                for st in staged:
                    self.issue(st.path, "rejected", f"stored but no volume could be built: {exc}")
                image = None
            if image is not None:
                self._replace_volume(s, case, image, f"{case.case_key}.nii.gz")
            for st in staged:
                sha = st.sha
                s.add(
                    IngestedSource(
                        dataset_id=self.dataset_id, sha256=sha, case_id=case.id, outcome="stored"
                    )
                )
                self.known.add(sha)
            self.summary.files_stored += len(staged)
            if created:
                self.summary.cases_added += 1
            else:
                self.summary.cases_updated += 1

    def _replace_volume(
        self, s: Session, case: Case, image: Image, name: str, role: str = "image"
    ) -> None:
        digest, size = self._store_nifti(image)
        for o in list(case.objects):
            if o.role == role and o.digest != digest:
                case.objects.remove(o)
                s.delete(o)
        if not any(o.role == role and o.digest == digest for o in case.objects):
            case.objects.append(
                CaseObject(
                    role=role, digest=digest, size=size, media_type=NIFTI_MEDIA_TYPE, name=name
                )
            )
        if role == "image":
            case.shape = [int(x) for x in image.array.shape[: image.ndim]]
            case.spacing = [round(float(x), 6) for x in image.spacing]

    def _store_nifti(self, image: Image) -> tuple[str, int]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "x.nii.gz"
            write_nifti(image, out)
            digest = self.cat.store.put_file(out)
            return digest, out.stat().st_size

    def _attach_seg(self, path: Path, seg: pydicom.Dataset, sha: str) -> None:
        """Attach a de-identified DICOM SEG to the case of the series it references."""
        from medarena.datasets.dicom_seg import seg_to_label_image

        refs = seg.get("ReferencedSeriesSequence") or []
        ref_uids = [str(r.SeriesInstanceUID) for r in refs if "SeriesInstanceUID" in r]
        with self.cat.session() as s, s.begin():
            case = (
                s.scalars(
                    select(Case).where(
                        Case.dataset_id == self.dataset_id, Case.series_uid.in_(ref_uids)
                    )
                ).first()
                if ref_uids
                else None
            )
            if case is None:
                self.issue(
                    path,
                    "rejected",
                    "DICOM SEG references no series of this dataset; "
                    "ingest the segmented images together with (or before) the SEG",
                )
                return
            buf = io.BytesIO()
            seg.save_as(buf, enforce_file_format=True)
            digest = self.cat.store.put_bytes(buf.getvalue())
            if not any(o.digest == digest for o in case.objects):
                case.objects.append(
                    CaseObject(
                        role="seg",
                        digest=digest,
                        size=len(buf.getvalue()),
                        media_type="application/dicom",
                        name=f"{seg.SOPInstanceUID}.dcm",
                    )
                )
            dicom_digests = [o.digest for o in case.objects if o.role == "dicom"]
            try:
                label = seg_to_label_image(seg, [self.cat.store.path_of(d) for d in dicom_digests])
            except MedarenaError as exc:
                self.issue(path, "rejected", str(exc))
                raise _Abort from None
            self._replace_volume(s, case, label, f"{case.case_key}_label.nii.gz", role="label")
            s.add(
                IngestedSource(
                    dataset_id=self.dataset_id, sha256=sha, case_id=case.id, outcome="stored"
                )
            )
            self.known.add(sha)
            self.summary.files_stored += 1
            self.summary.cases_updated += 1

    # ------------------------------------------------------- NIfTI / images
    def ingest_volumes(self, cases: Iterable[VolumeCase]) -> None:
        cases = list(cases)
        for i, vc in enumerate(cases):
            self.progress("ingesting volumes", i + 1, len(cases))
            try:
                self._ingest_volume_case(vc)
            except _Abort:
                continue

    def _ingest_volume_case(self, vc: VolumeCase) -> None:
        files = [*vc.images, *([vc.label] if vc.label else [])]
        if not vc.images:
            if vc.label:
                self.issue(vc.label, "rejected", f"label for case {vc.key!r} has no image")
            return
        shas = {}
        for p in files:
            try:
                shas[p] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as exc:
                self.issue(p, "rejected", f"cannot read file: {exc}")
                return
        seen: dict[str, Path] = {}
        for p in vc.images:
            if shas[p] in seen:
                self.issue(
                    p,
                    "rejected",
                    f"channel file is identical to {seen[shas[p]].name} of case {vc.key!r}: "
                    "the channels of a case must differ (store masks that may be equal, such "
                    "as empty ROIs, in one label map instead)",
                )
                return
            seen[shas[p]] = p
        # Identical files may belong to different cases (two empty label maps), so a
        # volume case is recognised by its key and the hashes of all its files together.
        fingerprint = hashlib.sha256(
            "\x00".join([vc.key, *(f"{p.name}:{shas[p]}" for p in files)]).encode()
        ).hexdigest()
        if fingerprint in self.known:
            self.summary.files_skipped += len(files)
            return
        images: list[Image] = []
        for p in vc.images:
            try:
                images.append(read_image(p))
            except MedarenaError as exc:
                self.issue(p, "rejected", str(exc))
                return
        ref = images[0]
        for p, img in zip(vc.images[1:], images[1:], strict=True):
            if img.array.shape[: img.ndim] != ref.array.shape[: ref.ndim]:
                self.issue(
                    p,
                    "rejected",
                    f"channel shape {img.array.shape} differs from "
                    f"{vc.images[0].name} shape {ref.array.shape}",
                )
                return
        label: Image | None = None
        if vc.label is not None:
            try:
                label = _as_label(read_image(vc.label), vc.label)
            except MedarenaError as exc:
                self.issue(vc.label, "rejected", str(exc))
                return
            if label.array.shape != ref.array.shape[: ref.ndim]:
                self.issue(
                    vc.label,
                    "rejected",
                    f"label shape {label.array.shape} does not match image shape "
                    f"{ref.array.shape[: ref.ndim]} of {vc.images[0].name}: image and label "
                    "must have the same grid",
                )
                return
            if not np.allclose(label.spacing, ref.spacing, rtol=1e-3, atol=1e-3):
                self.issue(
                    vc.label,
                    "rejected",
                    f"label spacing {tuple(round(x, 4) for x in label.spacing)} does not "
                    f"match image spacing {tuple(round(x, 4) for x in ref.spacing)}",
                )
                return
        fmt = "nifti" if vc.images[0].name.lower().endswith((".nii", ".nii.gz")) else "image"
        with self.cat.session() as s, s.begin():
            case = s.scalars(
                select(Case).where(Case.dataset_id == self.dataset_id, Case.case_key == vc.key)
            ).one_or_none()
            if case is not None:
                self.issue(
                    vc.images[0],
                    "rejected",
                    f"case id {vc.key!r} already exists in this dataset with other content; "
                    "nothing was changed (rename the file or use a new dataset)",
                )
                return
            case = Case(
                dataset_id=self.dataset_id,
                case_key=vc.key,
                source_format=fmt,
                modality=ref.meta.get("modality"),
                site=self.opts.site,
                extra={"subset_hint": vc.subset_hint} if vc.subset_hint else {},
            )
            s.add(case)
            s.flush()
            for n, (p, img) in enumerate(zip(vc.images, images, strict=True)):
                name = f"{vc.key}_{n:04d}.nii.gz" if len(images) > 1 else f"{vc.key}.nii.gz"
                digest, size = self._store_nifti(img)
                case.objects.append(
                    CaseObject(
                        role="image",
                        digest=digest,
                        size=size,
                        media_type=NIFTI_MEDIA_TYPE,
                        name=name,
                    )
                )
                del p
            case.shape = [int(x) for x in ref.array.shape[: ref.ndim]]
            case.spacing = [round(float(x), 6) for x in ref.spacing]
            if label is not None:
                self._replace_volume(s, case, label, f"{vc.key}_label.nii.gz", role="label")
            s.add(
                IngestedSource(
                    dataset_id=self.dataset_id,
                    sha256=fingerprint,
                    case_id=case.id,
                    outcome="stored",
                )
            )
            self.known.add(fingerprint)
            self.summary.files_stored += len(files)
            self.summary.cases_added += 1

    # ---------------------------------------------------------------- labels
    def apply_labels_csv(self, path: Path) -> None:
        """Case-level labels and attributes from a CSV with a ``case_id`` column."""
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self.issue(path, "rejected", f"cannot read CSV: {exc}")
            return
        if not rows or "case_id" not in rows[0]:
            self.issue(path, "rejected", "labels CSV must have a header with a 'case_id' column")
            return
        with self.cat.session() as s, s.begin():
            cases = {
                c.case_key: c
                for c in s.scalars(select(Case).where(Case.dataset_id == self.dataset_id))
            }
            for line, row in enumerate(rows, start=2):
                key = (row.get("case_id") or "").strip()
                case = cases.get(key)
                if case is None:
                    self.issue(
                        path, "rejected", f"line {line}: case_id {key!r} is not in the dataset"
                    )
                    continue
                labels = dict(case.labels)
                for col, raw in row.items():
                    if col == "case_id" or col is None:
                        continue
                    value = _parse_value(raw)
                    if isinstance(value, float) and math.isinf(value):
                        self.issue(
                            path,
                            "rejected",
                            f"line {line}: column {col!r} value {(raw or '').strip()!r} is not "
                            "a finite number (leave the cell empty for a missing value)",
                        )
                        continue
                    if col in ATTRIBUTE_COLUMNS:
                        attr = "age_years" if col == "age" else col
                        setattr(case, attr, _sex(value) if col == "sex" else value)
                    else:
                        labels[col] = value
                case.labels = labels
                self.summary.labels_applied += 1


class _Abort(Exception):
    pass


@dataclass
class _Staged:
    """A de-identified dataset waiting to be stored, with what was derived before."""

    path: Path
    dataset: pydicom.Dataset
    sha: str
    derived: DerivedMetadata


def _as_label(img: Image, path: Path) -> Image:
    arr = img.array
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError("label map contains NaN or infinite values", path=path)
        if not np.array_equal(arr, np.round(arr)):
            raise InputError("label map must hold whole numbers (class indices)", path=path)
    if arr.min(initial=0) < 0:
        raise InputError("label values must be non-negative", path=path, value=int(arr.min()))
    return img.with_array(
        arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16), kind="label"
    )


def _parse_value(raw: str | None) -> Any:
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "":
        return None
    for cast in (int, float):
        try:
            value = cast(raw)
        except ValueError:
            continue
        # NaN is how many tools write a missing value; stored, it would be NULL on SQLite,
        # NaN on PostgreSQL, and refused by PostgreSQL's json type.
        return None if isinstance(value, float) and math.isnan(value) else value
    return raw


def _sex(value: Any) -> str | None:
    if value in (None, ""):
        return None
    v = str(value).strip().upper()[:1]
    return v if v in ("M", "F", "O") else None


def _dicom_case_key(ds: pydicom.Dataset) -> str:
    """A readable, non-identifying case key: patient pseudonym + short series hash."""
    patient = str(ds.get("PatientID", "") or "anon")
    series = hashlib.sha256(str(ds.SeriesInstanceUID).encode()).hexdigest()[:8]
    return f"{patient}-{ds.get('Modality', 'OT')}-{series}"


def ingest(
    cat: Catalogue,
    path: Path,
    dataset: str,
    options: IngestOptions | None = None,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Ingest ``path`` (file or folder) into ``dataset`` (created if needed)."""
    opts = options or IngestOptions()
    run = _Run(cat, path, dataset, opts, progress or (lambda _s, _d, _t: None))
    try:
        found = discover(path)
        for p, reason in found.unreadable:
            run.issue(p, "rejected", reason)
        if found.dicom_candidates:
            run.ingest_dicom(found.dicom_candidates)
        if found.volume_cases:
            run.ingest_volumes(found.volume_cases.values())
        for p in found.orphan_labels:
            run.issue(p, "rejected", f"label file has no image with case id {case_id_of(p)!r}")
        csvs = [opts.labels_csv] if opts.labels_csv else found.csv_files
        for p in csvs:
            run.apply_labels_csv(p)
    finally:
        if run.deid.identity is not None:
            run.deid.identity.close()
    return run.summary
