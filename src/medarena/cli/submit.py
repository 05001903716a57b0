"""``medarena submit``: upload a predictions archive to a challenge server and follow its status."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from medarena.cli.common import console, err_console

_CHUNK = 1 << 20
_DONE = ("scored", "failed", "cancelled")


def _chunks(path: Path) -> Iterator[bytes]:
    # a generator body makes httpx stream the upload: the file is never read whole
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text
    if isinstance(detail, dict):
        problems = [str(p) for p in detail.get("problems") or []]
        if not problems:
            return str(detail.get("message", ""))
        # the message repeats the problems in one line; show them one a line instead
        return "\n".join([f"{len(problems)} problem(s):", *(f"  - {p}" for p in problems)])
    return str(detail)


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(message, highlight=False, markup=False)
    raise typer.Exit(code)


def _get(c: httpx.Client, path: str) -> dict[str, Any]:
    """GET a JSON object from the server; a refusal or lost connection ends the command."""
    try:
        resp = c.get(path, timeout=30.0)
    except httpx.HTTPError as exc:
        _fail(f"lost the connection to {c.base_url}: {exc}")
    if resp.status_code != 200:
        _fail(f"{path}: refused ({resp.status_code})\n{_detail(resp)}")
    data = resp.json()
    assert isinstance(data, dict)
    return data


def _follow(
    c: httpx.Client, sid: int, last: str, poll: float, timeout: float | None
) -> dict[str, Any]:
    """Print each new status line (running with its progress) until scored or failed.

    ``last`` is the status already printed (the upload's answer), not repeated.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = _get(c, f"/api/v1/submissions/{sid}")
        line = st["status"]
        if st["status"] == "running":
            line += f" {100 * float(st.get('progress') or 0.0):.0f}%"
        if line != last:
            console.print(line, highlight=False)
            last = line
        if st["status"] in _DONE:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            _fail(
                f"submission {sid} is still {st['status']} after {timeout:g} s; "
                f"follow it at {c.base_url}/submissions/{sid}",
                3,
            )
        time.sleep(poll)


def register(app: typer.Typer) -> None:
    @app.command("submit")
    def submit(
        file: Annotated[
            Path,
            typer.Argument(help="Predictions archive (zip or tar).", exists=True, dir_okay=False),
        ],
        challenge: Annotated[str, typer.Option("--challenge", help="Challenge slug.")],
        track: Annotated[str, typer.Option("--track", help="Track slug.")],
        phase: Annotated[str, typer.Option("--phase", help="Phase slug.")],
        wait: Annotated[
            bool,
            typer.Option(
                "--wait", help="Follow the status (with progress) until scored or failed."
            ),
        ] = False,
        poll: Annotated[
            float, typer.Option("--poll", min=0.05, help="Seconds between status checks.")
        ] = 2.0,
        timeout: Annotated[
            float | None,
            typer.Option("--timeout", min=0, help="With --wait: give up after this many seconds."),
        ] = None,
    ) -> None:
        """Upload FILE to a challenge (server from MEDARENA_URL, token from MEDARENA_TOKEN).

        Prints the submission id and its page. Exit status: 0 accepted (with --wait:
        scored), 1 scoring failed, 2 refused or unusable (the reasons are printed),
        3 --timeout ran out while the submission was still queued or running.
        """
        url = os.environ.get("MEDARENA_URL", "").rstrip("/")
        token = os.environ.get("MEDARENA_TOKEN", "").strip()
        missing = [n for n, v in (("MEDARENA_URL", url), ("MEDARENA_TOKEN", token)) if not v]
        if missing:
            _fail(
                f"{' and '.join(missing)} not set: set MEDARENA_URL to the server "
                "(e.g. http://127.0.0.1:8000) and MEDARENA_TOKEN to an API token "
                "(create one on your account page)"
            )
        auth = {"Authorization": f"Bearer {token}"}
        params = {"track": track, "phase": phase, "filename": file.name}
        with httpx.Client(base_url=url, headers=auth) as c:
            try:
                resp = c.post(
                    f"/api/v1/challenges/{challenge}/submissions",
                    params=params,
                    content=_chunks(file),
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=httpx.Timeout(30.0, write=None),
                )
            except httpx.HTTPError as exc:
                _fail(f"cannot reach {url}: {exc}")
            if resp.status_code != 201:
                _fail(f"{file.name}: refused ({resp.status_code})\n{_detail(resp)}")
            sub = resp.json()
            sid = int(sub["id"])
            console.print(
                f"submission {sid} {sub['status']}: {url}/submissions/{sid}", highlight=False
            )
            if not wait:
                return
            st = _follow(c, sid, str(sub["status"]), poll, timeout)
            if st["status"] != "scored":
                _fail(f"submission {sid} {st['status']}: {st.get('error') or 'no reason given'}", 1)
            res = _get(c, f"/api/v1/submissions/{sid}/result")
            primary = res.get("primary_metric")
            scores = res.get("scores") or {}
            for name, value in sorted(scores.items(), key=lambda kv: kv[0] != primary):
                mark = " (primary)" if name == primary else ""
                console.print(f"{name} {value}{mark}", highlight=False)
