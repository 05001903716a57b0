"""DICOM de-identification by PS3.15 Annex E (Basic Application Level Confidentiality Profile).

Public API:
- :class:`DeidOptions` - which PS3.15 options apply;
- :class:`DeidContext` - shared state of a run (``DeidContext.from_settings``);
- :func:`deidentify_dataset` - one dataset -> :class:`DeidOutcome` (done / quarantined / rejected);
- :func:`deidentify_tree` - a folder -> :class:`DeidSummary`;
- :func:`load_procedure` - the versioned rule table (``procedure_v1.json``);
- :func:`open_identity_map` - the admin-only identity database.
"""

from medarena.dicom.deid.engine import DeidContext, DeidOutcome, deidentify_dataset
from medarena.dicom.deid.identity import IdentityMap, open_identity_map
from medarena.dicom.deid.procedure import DeidOptions, Procedure, load_procedure
from medarena.dicom.deid.tree import DeidSummary, FileResult, deidentify_file, deidentify_tree

__all__ = [
    "DeidContext",
    "DeidOptions",
    "DeidOutcome",
    "DeidSummary",
    "FileResult",
    "IdentityMap",
    "Procedure",
    "deidentify_dataset",
    "deidentify_file",
    "deidentify_tree",
    "load_procedure",
    "open_identity_map",
]
