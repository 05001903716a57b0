from __future__ import annotations

import stat
from pathlib import Path

import pytest

from medarena.config import get_settings
from medarena.errors import ConfigError


def test_embedded_default_generates_secret_once_with_mode_0600(tmp_path: Path) -> None:
    s = get_settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'medarena.db'}"
    secret = s.secret
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    # A second Settings object reads the same secret back, it does not make a new one.
    assert get_settings(data_dir=tmp_path).secret == secret


def test_non_default_database_refuses_without_secret(tmp_path: Path) -> None:
    s = get_settings(data_dir=tmp_path, database_url="postgresql+psycopg://u@db/x")
    with pytest.raises(ConfigError, match="MEDARENA_SECRET_KEY"):
        _ = s.secret
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("weak", ["changeme", "short-secret"])
def test_weak_secret_is_refused_naming_the_variable(tmp_path: Path, weak: str) -> None:
    s = get_settings(data_dir=tmp_path, secret_key=weak)
    with pytest.raises(ConfigError, match="MEDARENA_SECRET_KEY"):
        _ = s.secret


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    _ = get_settings(data_dir=tmp_path).secret
    (tmp_path / "secret_key").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        _ = get_settings(data_dir=tmp_path).secret


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDARENA_DATABASE_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("MEDARENA_SECRET_KEY", "k" * 40)
    s = get_settings()
    assert s.resolved_database_url == "sqlite:////tmp/x.db"
    assert s.secret == b"k" * 40


def test_identity_dir_is_owner_only(tmp_path: Path) -> None:
    s = get_settings(data_dir=tmp_path)
    s.ensure_dirs()
    assert stat.S_IMODE((tmp_path / "identity").stat().st_mode) == 0o700
