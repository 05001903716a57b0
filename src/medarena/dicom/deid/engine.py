"""De-identification of one dataset by PS3.15 Annex E (Basic Profile + options).

Ingest calls :func:`deidentify_dataset` for every DICOM object with one shared
:class:`DeidContext`. The walk touches only elements that an action applies to;
untouched elements (pixel data above all) stay as raw bytes, which keeps the cost
close to a plain read + write and the pixel data byte-identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medarena.dicom.deid.keys import Keyring
from medarena.dicom.deid.procedure import (
    DeidOptions,
    Op,
    Procedure,
    compile_actions,
    load_procedure,
)
from medarena.dicom.deid.sopclasses import (
    BURNED_IN_SOP_CLASSES,
    DICOMDIR_SOP_CLASS,
    KNOWN_SAFE_SOP_CLASSES,
)
from medarena.dicom.deid.values import (
    DUMMY_BY_VR,
    TEXT_VRS,
    DescriptorScrubber,
    UnshiftableDate,
    shift_da,
    shift_dt,
)

if TYPE_CHECKING:
    from medarena.config import Settings
    from medarena.dicom.deid.identity import IdentityMap

logger = logging.getLogger(__name__)

Status = Literal["done", "quarantined", "rejected"]

_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010
_REGISTERED_UID_ROOT = "1.2.840.10008."
# UIDs that name a class, syntax or coding scheme, not an instance: never identifying.
_KEEP_UID_TAGS = frozenset(
    {
        0x00020002,  # MediaStorageSOPClassUID
        0x00020010,  # TransferSyntaxUID
        0x00020012,  # ImplementationClassUID
        0x00041510,  # ReferencedSOPClassUIDInFile
        0x00041512,  # ReferencedTransferSyntaxUIDInFile
        0x00080016,  # SOPClassUID
        0x0008001A,  # RelatedGeneralSOPClassUID
        0x0008001B,  # OriginalSpecializedSOPClassUID
        0x0008010C,  # CodingSchemeUID
        0x0008010D,  # ContextGroupExtensionCreatorUID
        0x00080117,  # ContextUID
        0x00080118,  # MappingResourceUID
        0x00081150,  # ReferencedSOPClassUID
    }
)
# Values of these top-level attributes feed the Clean Descriptors scrubber.
_IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientBirthDate",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "AdmissionID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "OperatorsName",
    "RequestingPhysician",
    "StationName",
)

_CODE_MEANINGS = {
    "113100": "Basic Application Confidentiality Profile",
    "113105": "Clean Descriptors Option",
    "113106": "Retain Longitudinal Temporal Information Full Dates Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}
_OPTION_CODES = (
    ("clean_descriptors", "113105"),
    ("retain_full_dates", "113106"),
    ("retain_modified_dates", "113107"),
    ("retain_patient_characteristics", "113108"),
    ("retain_device_identity", "113109"),
    ("retain_safe_private", "113111"),
    ("retain_institution_identity", "113112"),
)
_METHOD_TEXT = {
    "113100": "PS3.15 E.1 Basic Profile",
    "113105": "Clean Descriptors",
    "113106": "Retain Longitudinal Full Dates",
    "113107": "Retain Longitudinal Modified Dates",
    "113108": "Retain Patient Characteristics",
    "113109": "Retain Device Identity",
    "113111": "Retain Safe Private",
    "113112": "Retain Institution Identity",
}
_FILE_META_REMOVE = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)


@lru_cache(maxsize=8192)
def _dict_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


@dataclass(frozen=True)
class DeidOutcome:
    """Result of one dataset: done (with the de-identified dataset), quarantined or rejected.

    ``reason`` never holds a patient identifier: only rules, SOP class names and UIDs
    of classes.
    """

    status: Status
    dataset: Dataset | None = None
    reason: str | None = None
    patient_pseudonym: str | None = None


@dataclass
class _FileState:
    shift_days: int
    scrubber: DescriptorScrubber | None


@dataclass
class DeidContext:
    """Everything shared by all datasets of a run: options, compiled rules, keys, identity map."""

    options: DeidOptions
    keyring: Keyring
    procedure: Procedure
    identity: IdentityMap | None = None
    actions: dict[int, Op] = field(init=False)
    _safe_private: frozenset[tuple[int, str, int]] = field(init=False)
    _seen_patients: set[str] = field(init=False, default_factory=set)
    _seen_studies: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.actions = compile_actions(self.procedure, self.options)
        self._safe_private = frozenset(p.key for p in self.procedure.safe_private)

    @classmethod
    def create(
        cls,
        options: DeidOptions,
        secret: bytes,
        *,
        uid_root: str = "2.25",
        identity: IdentityMap | None = None,
        procedure_version: str = "1",
    ) -> DeidContext:
        """Build a context from explicit parts (tests, ingest with its own identity map)."""
        return cls(
            options=options,
            keyring=Keyring(secret, uid_root),
            procedure=load_procedure(procedure_version),
            identity=identity,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, options: DeidOptions, *, record_identities: bool = True
    ) -> DeidContext:
        """Build a context from Settings: project secret, UID root and the identity database."""
        identity = None
        if record_identities:
            from medarena.dicom.deid.identity import open_identity_map

            identity = open_identity_map(settings)
        return cls.create(options, settings.secret, uid_root=settings.uid_root, identity=identity)

    # -- public ---------------------------------------------------------------------------

    def classify(self, ds: Dataset) -> DeidOutcome | None:
        """Quarantine or reject decision for ``ds``; None when it may be de-identified."""
        sop_class = str(ds.get("SOPClassUID", "") or "").strip()
        if not sop_class:
            return DeidOutcome(
                "rejected", reason="no SOP Class UID (0008,0016): not a storable object"
            )
        if sop_class == DICOMDIR_SOP_CLASS:
            return DeidOutcome("rejected", reason="DICOMDIR (media directory), holds no image")
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if burned == "YES":
            return DeidOutcome(
                "quarantined",
                reason="Burned In Annotation (0028,0301) is YES and no pixel-cleaning rule "
                "covers it",
            )
        if sop_class in BURNED_IN_SOP_CLASSES:
            return DeidOutcome(
                "quarantined",
                reason=f"{BURNED_IN_SOP_CLASSES[sop_class]} ({sop_class}) often carries "
                "burned-in text and no pixel-cleaning rule covers it",
            )
        if sop_class not in KNOWN_SAFE_SOP_CLASSES and not self.options.allow_unknown_sop_classes:
            return DeidOutcome(
                "rejected",
                reason=f"SOP class {sop_class} is not on the known-safe list "
                "(use --allow-unknown-sop-classes to de-identify it anyway)",
            )
        return None

    def deidentify(self, ds: Dataset) -> DeidOutcome:
        """De-identify ``ds`` in place; see :func:`deidentify_dataset`."""
        decision = self.classify(ds)
        if decision is not None:
            return decision
        patient_key = self._patient_key(ds)
        pseudonym = self.keyring.patient_pseudonym(patient_key)
        original_study = str(ds.get("StudyInstanceUID", "") or "")
        if self.identity is not None:
            self._record_identity(ds, pseudonym, original_study)
        scrubber = None
        if self.options.clean_descriptors or self.options.retain_patient_characteristics:
            scrubber = DescriptorScrubber(_identifying_values(ds))
        state = _FileState(self.keyring.date_shift_days(patient_key), scrubber)
        self._walk(ds, state, scrub_mode=False)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        self._write_method(ds)
        self._fix_file_meta(ds)
        return DeidOutcome("done", dataset=ds, patient_pseudonym=pseudonym)

    # -- identity -------------------------------------------------------------------------

    @staticmethod
    def _patient_key(ds: Dataset) -> str:
        # Without a Patient ID each study becomes its own pseudonymous patient: merging
        # every anonymous input under one pseudonym would link unrelated people.
        pid = str(ds.get("PatientID", "") or "").strip()
        if pid:
            return "id:" + pid
        study = str(ds.get("StudyInstanceUID", "") or "").strip()
        if study:
            return "study:" + study
        return "sop:" + str(ds.get("SOPInstanceUID", "") or "")

    def _record_identity(self, ds: Dataset, pseudonym: str, original_study: str) -> None:
        assert self.identity is not None
        if pseudonym not in self._seen_patients:
            self.identity.record_patient(
                pseudonym,
                original_patient_id=str(ds.get("PatientID", "") or ""),
                original_patient_name=str(ds.get("PatientName", "") or ""),
            )
            self._seen_patients.add(pseudonym)
        if original_study and original_study not in self._seen_studies:
            self.identity.record_study(pseudonym, original_study, self.keyring.uid(original_study))
            self._seen_studies.add(original_study)

    # -- the walk -------------------------------------------------------------------------

    def _walk(self, ds: Dataset, state: _FileState, *, scrub_mode: bool) -> None:
        actions = self.actions
        has_private = False
        for tag in list(ds.keys()):  # keys(): iterating ds itself would convert raw elements
            group = tag >> 16
            if group & 1:
                has_private = True
                continue
            if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
                # Curves and overlays (Table E.1-1 group rows): the whole group goes.
                del ds[tag]
                continue
            op = actions.get(tag)
            if op is None:
                op = self._untabled_op(ds, tag, scrub_mode)
                if op is None:
                    continue
            self._apply(ds, tag, op, state, scrub_mode)
        if has_private:
            self._private(ds)

    def _untabled_op(self, ds: Dataset, tag: int, scrub_mode: bool) -> Op | None:
        raw_vr = ds.get_item(tag).VR
        vr = raw_vr if raw_vr and raw_vr != "UN" else _dict_vr(tag)
        if vr == "SQ":
            return Op.KEEP  # recurse: rules apply inside every item
        if vr == "PN":
            return Op.EMPTY
        if vr in ("DA", "DT"):
            if self.options.retain_full_dates:
                return None
            return Op.SHIFT_DATE if self.options.retain_modified_dates else Op.EMPTY
        if vr == "TM":
            if self.options.retain_full_dates or self.options.retain_modified_dates:
                return None
            return Op.EMPTY
        if vr == "UI":
            return None if tag in _KEEP_UID_TAGS else Op.UID
        if scrub_mode and vr in TEXT_VRS:
            return Op.SCRUB_TEXT
        return None

    def _apply(self, ds: Dataset, tag: int, op: Op, state: _FileState, scrub_mode: bool) -> None:
        if op is Op.REMOVE:
            del ds[tag]
            return
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            if op in (Op.EMPTY, Op.DUMMY):
                elem.value = Sequence([])
            else:
                inner_scrub = scrub_mode or op is Op.SCRUB_TEXT
                for item in elem.value:
                    self._walk(item, state, scrub_mode=inner_scrub)
            return
        if op is Op.KEEP:
            return
        if op is Op.EMPTY:
            elem.value = None
        elif op is Op.DUMMY:
            elem.value = DUMMY_BY_VR.get(vr, "ANONYMIZED")
        elif op is Op.UID:
            if vr == "UI":
                elem.value = _map_values(elem.value, self._map_uid)
        elif op is Op.SHIFT_DATE:
            self._shift(elem, state.shift_days)
        elif op is Op.SCRUB_TEXT and vr in TEXT_VRS and state.scrubber is not None:
            scrubber = state.scrubber
            elem.value = _map_values(elem.value, lambda v: scrubber.scrub(str(v)) or "")

    def _map_uid(self, value: object) -> str:
        text = str(value).strip().rstrip("\x00")
        if not text or text.startswith(_REGISTERED_UID_ROOT):
            return text
        return self.keyring.uid(text)

    @staticmethod
    def _shift(elem: object, days: int) -> None:
        vr = elem.VR  # type: ignore[attr-defined]
        if vr not in ("DA", "DT"):
            return  # TM and others: whole-day shifts leave times of day unchanged
        fn = shift_da if vr == "DA" else shift_dt
        try:
            elem.value = _map_values(elem.value, lambda v: fn(str(v), days))  # type: ignore[attr-defined]
        except UnshiftableDate:
            # A malformed date cannot be shifted; emptying it is the safe side.
            elem.value = None  # type: ignore[attr-defined]

    def _private(self, ds: Dataset) -> None:
        odd = [t for t in ds.keys() if (t >> 16) & 1]  # noqa: SIM118 - no conversion
        keep: set[int] = set()
        if self.options.retain_safe_private:
            creators: dict[tuple[int, int], str] = {}
            for t in odd:
                elem_no = t & 0xFFFF
                if 0x0010 <= elem_no <= 0x00FF:
                    creators[(t >> 16, elem_no)] = str(ds[t].value).strip()
            for t in odd:
                group, elem_no = t >> 16, t & 0xFFFF
                if elem_no < 0x1000:
                    continue
                creator = creators.get((group, elem_no >> 8))
                if creator is not None and (group, creator, elem_no & 0xFF) in self._safe_private:
                    keep.add(t)
                    keep.add((group << 16) | (elem_no >> 8))
        for t in odd:
            if t not in keep:
                del ds[t]

    # -- method attributes and file meta ------------------------------------------------------

    def _write_method(self, ds: Dataset) -> None:
        codes = ["113100"] + [c for opt, c in _OPTION_CODES if getattr(self.options, opt)]
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [_METHOD_TEXT[c] for c in codes] + [self.procedure.label]
        items = []
        for c in codes:
            item = Dataset()
            item.CodeValue = c
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = _CODE_MEANINGS[c]
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if self.options.retain_modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif self.options.retain_full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"

    @staticmethod
    def _fix_file_meta(ds: Dataset) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            meta = FileMetaDataset()
            ds.file_meta = meta
        if "TransferSyntaxUID" not in meta:
            implicit = bool(getattr(ds, "original_encoding", (False, True))[0])
            meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "MEDARENA_DEID_1"
        for kw in _FILE_META_REMOVE:
            if kw in meta:
                delattr(meta, kw)


def _map_values(value: object, fn: object) -> object:
    """Apply ``fn`` to a single value or to each value of a multi-valued element."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [fn(v) for v in value]  # type: ignore[operator, attr-defined]
    return fn(value)  # type: ignore[operator]


def _identifying_values(ds: Dataset) -> list[str]:
    values: list[str] = []
    for kw in _IDENTIFYING_KEYWORDS:
        if kw not in ds:
            continue
        value = ds[kw].value
        if value is None:
            continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            values.extend(str(v) for v in value)
        else:
            values.append(str(value))
    return values


def deidentify_dataset(ds: Dataset, ctx: DeidContext) -> DeidOutcome:
    """De-identify one dataset (in place) by PS3.15 Annex E under ``ctx``'s options.

    Returns ``done`` with the same (now de-identified) dataset and the patient's
    pseudonym, or ``quarantined`` / ``rejected`` with a reason, in which case ``ds``
    is left untouched and must not be stored for research use.
    """
    return ctx.deidentify(ds)


__all__ = ["DeidContext", "DeidOutcome", "deidentify_dataset"]
