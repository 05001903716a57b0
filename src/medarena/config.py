"""One typed Settings object, read from the environment (prefix MEDARENA_).

With no configuration medarena runs on an embedded default: a SQLite database,
a local object store and a generated secret key, all inside the data directory.
Anything shared (a database server) must be configured explicitly, and every
refusal names the variable to set.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from medarena.errors import ConfigError

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "dev", "test", "default"}
_MIN_SECRET_LEN = 32


class Settings(BaseSettings):
    """Runtime configuration of medarena. Build it with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="MEDARENA_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / "medarena-data",
        description="Where the embedded database, object store and secret live.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data dir."
    )
    identity_database_url: str | None = Field(
        default=None,
        description="Database of the identity map (original -> pseudonym), kept apart "
        "from research data; default: an admin-only SQLite file in the data dir.",
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Signs sessions and keys UID/patient pseudonyms."
    )
    store_dir: Path | None = Field(default=None, description="Object store directory.")
    dask_address: str | None = Field(default=None, description="Dask scheduler address.")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    uid_root: str = Field(
        default="2.25",
        description="Root under which de-identified UIDs are generated (2.25 = UUID-derived).",
    )

    @property
    def uses_default_database(self) -> bool:
        return self.database_url is None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'medarena.db'}"

    @property
    def resolved_identity_database_url(self) -> str:
        if self.identity_database_url:
            return self.identity_database_url
        return f"sqlite:///{self.data_dir / 'identity' / 'identity.db'}"

    @property
    def resolved_store_dir(self) -> Path:
        return self.store_dir or self.data_dir / "objects"

    def ensure_dirs(self) -> None:
        """Create the data directory layout (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_store_dir.mkdir(parents=True, exist_ok=True)
        if self.identity_database_url is None:
            ident = self.data_dir / "identity"
            ident.mkdir(mode=0o700, exist_ok=True)
            os.chmod(ident, 0o700)

    @cached_property
    def secret(self) -> bytes:
        """The project secret as bytes; generated once for the embedded default."""
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
            if value.strip().lower() in _PLACEHOLDER_SECRETS or len(value) < _MIN_SECRET_LEN:
                raise ConfigError(
                    f"MEDARENA_SECRET_KEY is too weak: use at least {_MIN_SECRET_LEN} random "
                    "characters, e.g. the output of "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
                )
            return value.encode()
        if not self.uses_default_database:
            raise ConfigError(
                "MEDARENA_SECRET_KEY must be set when MEDARENA_DATABASE_URL points at a "
                "shared database (every server of the deployment needs the same secret)"
            )
        return _load_or_create_secret(self.data_dir / "secret_key")


def _load_or_create_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{path}: secret key file has mode {oct(mode)}; it must be readable by its "
                f"owner only (chmod 600 {path}) or set MEDARENA_SECRET_KEY"
            )
        value = path.read_text().strip()
        if len(value) < _MIN_SECRET_LEN:
            raise ConfigError(f"{path}: secret key is shorter than {_MIN_SECRET_LEN} characters")
        return value.encode()
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value.encode()


def get_settings(**overrides: object) -> Settings:
    """Build Settings from the environment; keyword arguments override it (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
