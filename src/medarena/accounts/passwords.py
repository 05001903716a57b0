"""Password hashing with Argon2id (RFC 9106) through argon2-cffi.

The hash string carries its own parameters and salt, so parameters can be raised later:
:func:`needs_rehash` tells the login code to store a fresh hash.
"""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from medarena.errors import InputError

MIN_PASSWORD_LENGTH = 8  # NIST SP 800-63B: at least 8 characters for user-chosen secrets
MAX_PASSWORD_LENGTH = 1024  # bounds the hashing work a single request can ask for


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults are RFC 9106's second recommended profile (Argon2id,
    # t=3, m=64 MiB, p=4); built on first use, not at import.
    return PasswordHasher()


def check_password_rules(password: str, *, email: str = "") -> None:
    """Refuse passwords that are too short, too long or equal to the e-mail address."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters", path="password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InputError(
            f"a password may have at most {MAX_PASSWORD_LENGTH} characters", path="password"
        )
    if email and password.strip().lower() == email.strip().lower():
        raise InputError("the password must not be the e-mail address", path="password")


def hash_password(password: str) -> str:
    """The Argon2id hash string of ``password`` (salted, parameters included)."""
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; False on mismatch or a bad hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the stored hash was made with weaker parameters than today's."""
    try:
        return _hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A hash of a random string, verified against for unknown accounts.

    Doing the same Argon2 work whether or not the e-mail exists keeps response times
    from telling an attacker which addresses have accounts.
    """
    import secrets

    return hash_password(secrets.token_urlsafe(16))
