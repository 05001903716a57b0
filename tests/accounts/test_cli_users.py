"""`medarena users` against a real database (SQLite and PostgreSQL) through the Typer app."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from medarena.accounts import AuthError, authenticate, authenticate_token
from medarena.cli.main import app
from medarena.config import get_settings
from medarena.datasets.catalogue import open_catalogue

PW = "correct horse battery"


def test_users_create_token_deactivate(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDARENA_DATABASE_URL", db_url)
    monkeypatch.setenv("MEDARENA_SECRET_KEY", "k" * 48)
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["users", "create", "Root@Example.org", "--admin", "--password-stdin"],
        input=PW + "\n",
    )
    assert r.exit_code == 0, r.output
    assert "root@example.org" in r.output and "platform admin" in r.output
    r = runner.invoke(app, ["users", "create", "root@example.org", "--password-stdin"], input=PW)
    assert r.exit_code == 2 and "exists already" in r.output
    r = runner.invoke(app, ["users", "create", "x@example.org", "--password-stdin"], input="abc\n")
    assert r.exit_code == 2 and "at least 8 characters" in r.output
    r = runner.invoke(app, ["users", "token", "root@example.org", "--name", "ci"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("mda_") and len(token) == 47
    r = runner.invoke(app, ["users", "token", "nobody@example.org", "--name", "ci"])
    assert r.exit_code == 2 and "no user with e-mail" in r.output

    cat = open_catalogue(get_settings())
    try:
        with cat.session() as s:
            user = authenticate(s, "root@example.org", PW, address="127.0.0.1")
            assert user.is_admin
            assert authenticate_token(s, token)[1].id == user.id
        assert runner.invoke(app, ["users", "deactivate", "root@example.org"]).exit_code == 0
        with cat.session() as s, pytest.raises(AuthError, match="deactivated"):
            authenticate_token(s, token)
        r = runner.invoke(app, ["users", "list"])
        assert r.exit_code == 0 and "NO" in r.output
    finally:
        cat.close()
