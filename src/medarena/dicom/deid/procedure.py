"""The de-identification procedure: PS3.15 Table E.1-1 as versioned data, compiled per option set.

The table lives in ``procedure_v<N>.json`` next to this module. Each rule holds the
attribute's tag, keyword, the Basic Profile action, the action under each option
column and the concrete action a compound code (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) is
resolved to, with the reason. :func:`compile_actions` turns the table and a
:class:`DeidOptions` into a tag -> :class:`Op` map used by the engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medarena.errors import ConfigError

ActionCode = Literal["D", "Z", "X", "K", "C", "U"]

PROCEDURE_NAME = "medarena-deid"
CURRENT_VERSION = "1"


class Op(Enum):
    """Concrete operation applied to one element."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    UID = "U"
    SHIFT_DATE = "C-date"
    SCRUB_TEXT = "C-text"


class DeidOptions(BaseModel):
    """Which PS3.15 options a run applies (each maps to a CID 7050 code)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retain_modified_dates: bool = Field(
        True, description="Retain Longitudinal Temporal Information with Modified Dates (113107)"
    )
    retain_full_dates: bool = Field(
        False, description="Retain Longitudinal Temporal Information with Full Dates (113106)"
    )
    retain_patient_characteristics: bool = Field(
        False, description="Retain Patient Characteristics (113108)"
    )
    retain_device_identity: bool = Field(False, description="Retain Device Identity (113109)")
    retain_institution_identity: bool = Field(
        False, description="Retain Institution Identity (113112)"
    )
    clean_descriptors: bool = Field(False, description="Clean Descriptors (113105)")
    retain_safe_private: bool = Field(False, description="Retain Safe Private (113111)")
    allow_unknown_sop_classes: bool = Field(
        False,
        description="De-identify SOP classes outside the known-safe list instead of rejecting",
    )

    @model_validator(mode="after")
    def _one_date_option(self) -> DeidOptions:
        if self.retain_modified_dates and self.retain_full_dates:
            raise ValueError(
                "retain_modified_dates and retain_full_dates exclude each other: choose one"
            )
        return self

    def option_columns(self) -> tuple[str, ...]:
        """Table E.1-1 option columns selected, in the order of the table."""
        cols = []
        if self.retain_safe_private:
            cols.append("retain_safe_private")
        if self.retain_device_identity:
            cols.append("retain_device_identity")
        if self.retain_institution_identity:
            cols.append("retain_institution_identity")
        if self.retain_patient_characteristics:
            cols.append("retain_patient_characteristics")
        if self.retain_full_dates:
            cols.append("retain_full_dates")
        if self.retain_modified_dates:
            cols.append("retain_modified_dates")
        if self.clean_descriptors:
            cols.append("clean_descriptors")
        return tuple(cols)


class Rule(BaseModel):
    """One row of Table E.1-1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str = Field(pattern=r"^[0-9A-F]{8}$")
    keyword: str
    name: str
    vr: str
    in_std_comp_iod: bool
    basic: str
    options: dict[str, ActionCode]
    resolved: ActionCode
    resolution_note: str
    justification: str

    @property
    def tag_int(self) -> int:
        return int(self.tag, 16)


class GroupRule(BaseModel):
    """A row of Table E.1-1 that covers a tag pattern (curves, overlays, private groups)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    name: str
    basic: str
    options: dict[str, ActionCode]
    resolved: ActionCode
    resolution_note: str
    justification: str


class SafePrivate(BaseModel):
    """One private attribute kept under Retain Safe Private, keyed by creator and offset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    creator: str
    group: str = Field(pattern=r"^[0-9A-F]{4}$")
    offset: str = Field(pattern=r"^[0-9A-F]{2}$")
    meaning: str
    why: str

    @property
    def key(self) -> tuple[int, str, int]:
        return int(self.group, 16), self.creator, int(self.offset, 16)


class Procedure(BaseModel):
    """The whole versioned procedure file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    standard: str
    action_codes: dict[str, str]
    option_precedence: str
    extra_rules: dict[str, str]
    rules: list[Rule]
    group_rules: list[GroupRule]
    safe_private: list[SafePrivate]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def rule_for(self, tag: int) -> Rule | None:
        return _rules_by_tag(self).get(tag)


def _rules_by_tag(proc: Procedure) -> dict[int, Rule]:
    return {r.tag_int: r for r in proc.rules}


@lru_cache(maxsize=4)
def load_procedure(version: str = CURRENT_VERSION) -> Procedure:
    """Load and validate ``procedure_v<version>.json`` shipped with the package."""
    name = f"procedure_v{version}.json"
    try:
        text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"de-identification procedure version {version!r} does not exist "
            f"(no {name} in medarena.dicom.deid); current version is {CURRENT_VERSION}"
        ) from None
    proc = Procedure.model_validate(json.loads(text))
    tags = [r.tag for r in proc.rules]
    if len(tags) != len(set(tags)):
        raise ConfigError(f"{name}: a tag appears in more than one rule")
    return proc


def effective_code(rule_options: Mapping[str, str], resolved: str, options: DeidOptions) -> str:
    """The action code of one rule under the selected options (K beats C beats basic)."""
    chosen = [rule_options[c] for c in options.option_columns() if c in rule_options]
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    if chosen:
        return chosen[0]
    return resolved


_DATE_COLUMNS = ("retain_modified_dates", "retain_full_dates")


def op_for_rule(rule: Rule, options: DeidOptions) -> Op:
    """The concrete operation for one rule under the selected options."""
    code = effective_code(rule.options, rule.resolved, options)
    if code != "C":
        return Op(code)
    # Which option asked for cleaning decides how: dates are shifted, text is scrubbed.
    if options.retain_modified_dates and rule.options.get("retain_modified_dates") == "C":
        return Op.SHIFT_DATE
    return Op.SCRUB_TEXT


def compile_actions(proc: Procedure, options: DeidOptions) -> dict[int, Op]:
    """Tag -> operation for every row of the table under ``options``."""
    return {r.tag_int: op_for_rule(r, options) for r in proc.rules}
