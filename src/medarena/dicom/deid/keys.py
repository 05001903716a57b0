"""Keyed, deterministic replacements: UIDs, patient pseudonyms and per-patient date shifts.

Every value is an HMAC-SHA256 under the project secret with a separate label per
purpose, so the same input gives the same output in every run, process and batch
of a project, different projects give unrelated outputs, and nothing can be
reversed without the secret. Only the identity database (admin-only) maps back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from medarena.errors import ConfigError

# Shifts lie between 1 and 10 years into the past, whole days only: whole days keep
# every time of day unchanged, so no TM value has to move across midnight.
_MIN_SHIFT_DAYS = 365
_SHIFT_SPAN_DAYS = 9 * 365
_MAX_UID_LEN = 64


class Keyring:
    """Derives replacement values from one project secret."""

    def __init__(self, secret: bytes, uid_root: str = "2.25") -> None:
        if len(secret) < 16:
            raise ConfigError("the de-identification secret must be at least 16 bytes long")
        root = uid_root.rstrip(".")
        if not root or any(
            not p.isdigit() or (len(p) > 1 and p[0] == "0") for p in root.split(".")
        ):
            raise ConfigError(
                f"MEDARENA_UID_ROOT {uid_root!r} is not a valid UID root "
                "(dot-separated numbers without leading zeros, e.g. 2.25)"
            )
        # 39 digits hold a 128-bit number; the root must leave room for them.
        if len(root) + 1 + 39 > _MAX_UID_LEN:
            raise ConfigError(
                f"MEDARENA_UID_ROOT {uid_root!r} is too long: UIDs are at most 64 characters "
                "and 39 of them are needed for the 128-bit keyed part"
            )
        self._root = root
        self._uid_key = hmac.new(secret, b"medarena-deid/uid/v1", hashlib.sha256).digest()
        self._pid_key = hmac.new(secret, b"medarena-deid/patient/v1", hashlib.sha256).digest()
        self._date_key = hmac.new(secret, b"medarena-deid/date-shift/v1", hashlib.sha256).digest()
        self.uid = lru_cache(maxsize=65536)(self._uid)

    def _uid(self, original: str) -> str:
        """Replacement UID: root + decimal of the first 128 bits of HMAC(original)."""
        digest = hmac.new(self._uid_key, original.strip().encode("ascii", "replace"), "sha256")
        number = int.from_bytes(digest.digest()[:16], "big")
        return f"{self._root}.{number}"

    def patient_pseudonym(self, patient_key: str) -> str:
        """Stable pseudonym ``P`` + 16 base32 characters (80 bits) of HMAC(patient key)."""
        digest = hmac.new(self._pid_key, patient_key.encode("utf-8"), "sha256").digest()
        return "P" + base64.b32encode(digest[:10]).decode("ascii")

    def date_shift_days(self, patient_key: str) -> int:
        """Days to add to every date of this patient (negative: into the past)."""
        digest = hmac.new(self._date_key, patient_key.encode("utf-8"), "sha256").digest()
        return -(_MIN_SHIFT_DAYS + int.from_bytes(digest[:8], "big") % _SHIFT_SPAN_DAYS)
