"""Challenge data: which cases a phase scores, and the participant downloads.

Downloads are planned first (:func:`plan_download`: the permission checks and the list of
objects), then streamed as a zip (:func:`stream_zip`) without holding the archive in
memory. What each kind of download may contain is fixed here and nowhere else:

- ``training``: images and labels of a track's train subset, plus ``labels.csv`` with the
  case-level labels (classification, regression) and ``findings/<case>.json`` with the
  nodules and excluded findings (detection). A hidden subset is refused, and a case that
  another split of the dataset hides (another challenge's test case) is left out.
- ``inputs``: images only of a phase's scored subset, so participants can predict. No
  label map, no case-level label, no case attribute (for brain-age regression the age
  *is* the label). A phase that takes model submissions only never offers the images
  of a hidden subset (the worker runs the team's model on them; the team sees scores).
- ``reference``: labels of a scored subset, for organizers and reviewers only; reading a
  hidden subset this way is written to the audit log.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from medarena.accounts.audit import audit
from medarena.accounts.roles import can_review
from medarena.challenges.service import (
    PermissionDenied,
    find_track_phase,
    load_spec,
    require_participant,
    subset_info,
)
from medarena.challenges.spec import ChallengeSpec, Track
from medarena.datasets import dose as dose_ref
from medarena.datasets import findings as findings_ref
from medarena.db.models import Case, Dataset, Split, SplitAssignment
from medarena.db.platform_models import Challenge, User
from medarena.errors import InputError
from medarena.storage import LocalObjectStore

log = logging.getLogger(__name__)

DownloadKind = Literal["training", "inputs", "reference"]
DOWNLOAD_KINDS: tuple[DownloadKind, ...] = ("training", "inputs", "reference")
_CHUNK = 1 << 20


def hidden_in_any_split(session: Session, case_ids: list[int]) -> set[int]:
    """The ids among ``case_ids`` of cases in a hidden subset of some split of their dataset."""
    if not case_ids:
        return set()
    return set(
        session.scalars(
            select(SplitAssignment.case_id).where(
                SplitAssignment.case_id.in_(case_ids), SplitAssignment.hidden.is_(True)
            )
        )
    )


def subset_cases(session: Session, dataset: str, split: str, subset: str) -> list[Case]:
    """Cases of one subset of a dataset split, by case key, with their objects loaded."""
    return list(
        session.scalars(
            select(Case)
            .join(SplitAssignment, SplitAssignment.case_id == Case.id)
            .join(Split, Split.id == SplitAssignment.split_id)
            .join(Dataset, Dataset.id == Split.dataset_id)
            .where(Dataset.name == dataset, Split.name == split, SplitAssignment.subset == subset)
            .options(selectinload(Case.objects))
            .order_by(Case.case_key)
        )
    )


def expected_case_ids(
    session: Session, spec: ChallengeSpec, track_slug: str, phase_slug: str
) -> list[str]:
    """Sorted case ids a submission to (track, phase) must predict: the scored subset."""
    track, phase = find_track_phase(spec, track_slug, phase_slug)
    subset = spec.scored_subset(track, phase)
    return [c.case_key for c in subset_cases(session, track.dataset, track.split, subset)]


@dataclass(frozen=True)
class ZipEntry:
    """One member of a download: its name in the zip and where its bytes come from."""

    name: str
    digest: str | None = None  # object in the store
    data: bytes | None = None  # small generated file (labels.csv)


@dataclass
class DownloadPlan:
    """A checked download: file name and members (no bytes read yet)."""

    filename: str
    entries: list[ZipEntry] = field(default_factory=list)
    hidden: bool = False  # whether it reads a hidden subset (audited)


def _labels_csv(cases: list[Case]) -> bytes:
    columns = sorted({k for c in cases for k in c.labels})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id", *columns])
    for c in cases:
        w.writerow([c.case_key, *("" if c.labels.get(k) is None else c.labels[k] for k in columns)])
    return buf.getvalue().encode()


def _entries(cases: list[Case], roles: tuple[str, ...], *, labels_csv: bool) -> list[ZipEntry]:
    out: list[ZipEntry] = []
    for c in cases:
        for o in sorted(c.objects, key=lambda o: (o.role, o.name)):
            if dose_ref.is_dose_role(o.role):
                # dose cases: structures and the possible-dose mask are inputs, the dose
                # is the label (named by case id, as predictions are)
                if o.role == dose_ref.DOSE_ROLE and "label" in roles:
                    out.append(ZipEntry(f"labels/{c.case_key}.nii.gz", o.digest))
                elif o.role != dose_ref.DOSE_ROLE and "image" in roles:
                    name = dose_ref.reference_file_name(o.role)
                    out.append(ZipEntry(f"structures/{c.case_key}/{name}", o.digest))
                continue
            if o.role == findings_ref.FINDINGS_ROLE:
                # detection cases: the nodules and excluded findings are the label
                if "label" in roles:
                    out.append(ZipEntry(f"findings/{c.case_key}.json", o.digest))
                continue
            if o.role not in roles:
                continue
            if o.role == "image":
                # Stored names are "<case>.nii.gz" or "<case>_0000.nii.gz" (channels).
                name = o.name or f"{c.case_key}.nii.gz"
                out.append(ZipEntry(f"images/{name}", o.digest))
            else:  # label maps are named by case id alone: the evaluation contract
                out.append(ZipEntry(f"labels/{c.case_key}.nii.gz", o.digest))
    if labels_csv and any(c.labels for c in cases):
        out.append(ZipEntry("labels.csv", data=_labels_csv(cases)))
    return out


def _training_track(spec: ChallengeSpec, track_slug: str) -> Track:
    if not spec.data.training:
        raise PermissionDenied(f"challenge {spec.slug!r} offers no training download")
    return spec.track(track_slug)


def plan_download(
    session: Session,
    challenge: Challenge,
    user: User | None,
    kind: str,
    track_slug: str,
    phase_slug: str | None = None,
) -> DownloadPlan:
    """Check ``user`` may download ``kind`` of (track, phase) and list what the zip holds.

    Participants must have accepted the current rules. A reference download of a hidden
    subset is audited here, in the caller's transaction (commit it before streaming).
    """
    spec = load_spec(challenge)
    reviewer = can_review(session, user, challenge.id)
    if not reviewer:
        require_participant(session, challenge, user)
    if kind == "training":
        track = _training_track(spec, track_slug)
        subset = track.train_subset
    elif kind in ("inputs", "reference"):
        if phase_slug is None:
            raise InputError(f"a {kind} download names a phase", value=None)
        track, phase = find_track_phase(spec, track_slug, phase_slug)
        subset = spec.scored_subset(track, phase)
        if kind == "inputs" and not spec.data.evaluation_inputs and not reviewer:
            raise PermissionDenied(f"challenge {spec.slug!r} offers no input download")
        if kind == "inputs" and phase.state() == "upcoming" and not reviewer:
            raise PermissionDenied(f"phase {phase.slug!r} has not opened yet")
        if kind == "reference" and not reviewer:
            raise PermissionDenied("reference labels are for organizers and reviewers only")
    else:
        raise InputError(f"download kind must be one of {', '.join(DOWNLOAD_KINDS)}", value=kind)
    info = subset_info(session, track.dataset, track.split, subset)
    if info.hidden and kind != "inputs" and not reviewer:
        raise PermissionDenied("labels of a hidden subset are never downloadable")
    if (
        kind == "inputs"
        and info.hidden
        and not reviewer
        and "predictions" not in phase.submission_kinds
    ):
        # a models-only phase runs the team's model on these images: they never see them
        raise PermissionDenied(
            f"phase {phase.slug!r} takes model submissions only: the images of its hidden "
            f"subset {subset!r} are never downloadable (the worker runs your model on them)"
        )
    cases = subset_cases(session, track.dataset, track.split, subset)
    if kind == "training":
        # a case another split hides (another challenge's test case) keeps its labels
        hidden_ids = hidden_in_any_split(session, [c.id for c in cases])
        cases = [c for c in cases if c.id not in hidden_ids]
        entries = _entries(cases, ("image", "label"), labels_csv=True)
    elif kind == "inputs":
        entries = _entries(cases, ("image",), labels_csv=False)
    else:
        entries = _entries(cases, ("label",), labels_csv=True)
    if kind == "reference" and info.hidden:
        audit(
            session,
            user.id if user else None,
            "data.hidden_read",
            challenge_id=challenge.id,
            target=f"{track.dataset}/{track.split}/{subset}",
            detail={"track": track.slug, "phase": phase_slug, "cases": len(cases)},
        )
    suffix = (
        f"{track.slug}-{phase_slug}-{kind}"
        if phase_slug and kind != "training"
        else (f"{track.slug}-{kind}")
    )
    return DownloadPlan(f"{challenge.slug}-{suffix}.zip", entries, info.hidden)


class _Pipe(io.RawIOBase):
    """A write-only sink whose bytes are collected and drained by the zip generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.chunks.append(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        # zipfile asks for the position to write offsets; it never seeks back on a
        # non-seekable stream (it writes data descriptors instead).
        return self.pos

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def stream_zip(store: LocalObjectStore, plan: DownloadPlan) -> Iterator[bytes]:
    """Yield the zip of ``plan`` in chunks of about 1 MiB; memory stays at one chunk.

    Members are stored uncompressed: the NIfTI objects are gzip already.
    """
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED) as zf:
        for entry in plan.entries:
            info = zipfile.ZipInfo(entry.name, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, mode="w", force_zip64=True) as member:
                if entry.data is not None:
                    member.write(entry.data)
                else:
                    assert entry.digest is not None
                    with store.open(entry.digest) as src:
                        while chunk := src.read(_CHUNK):
                            member.write(chunk)
                            yield pipe.drain()
            yield pipe.drain()
    tail = pipe.drain()
    if tail:
        yield tail
