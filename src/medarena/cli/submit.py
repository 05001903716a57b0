"""``medarena submit``: upload a predictions archive to a challenge server and follow its status."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

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
        lines = [str(detail.get("message", ""))]
        lines += [f"  - {p}" for p in detail.get("problems", [])]
        return "\n".join(lines)
    return str(detail)


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
            bool, typer.Option("--wait", help="Print the status until scored or failed.")
        ] = False,
        poll: Annotated[float, typer.Option("--poll", help="Seconds between status checks.")] = 2.0,
    ) -> None:
        """Upload FILE to a challenge (server from MEDARENA_URL, token from MEDARENA_TOKEN)."""
        url = os.environ.get("MEDARENA_URL", "").rstrip("/")
        token = os.environ.get("MEDARENA_TOKEN", "")
        if not url or not token:
            err_console.print(
                "set MEDARENA_URL (e.g. http://127.0.0.1:8000) and MEDARENA_TOKEN (an API token "
                "from your account page)"
            )
            raise typer.Exit(2)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        params = {"track": track, "phase": phase, "filename": file.name}
        with httpx.Client(base_url=url, headers={"Authorization": headers["Authorization"]}) as c:
            try:
                resp = c.post(
                    f"/api/v1/challenges/{challenge}/submissions",
                    params=params,
                    content=_chunks(file),
                    headers=headers,
                    timeout=httpx.Timeout(30.0, write=None),
                )
            except httpx.HTTPError as exc:
                err_console.print(f"cannot reach {url}: {exc}")
                raise typer.Exit(2) from None
            if resp.status_code != 201:
                err_console.print(f"{file.name}: refused ({resp.status_code})\n{_detail(resp)}")
                raise typer.Exit(2)
            sub = resp.json()
            console.print(f"submission {sub['id']} {sub['status']}")
            if not wait:
                return
            last = ""
            while True:
                st = c.get(f"/api/v1/submissions/{sub['id']}", timeout=30.0).json()
                line = st["status"]
                if st["status"] == "running":
                    line += f" {100 * st['progress']:.0f}%"
                if line != last:
                    console.print(line)
                    last = line
                if st["status"] in _DONE:
                    break
                time.sleep(poll)
            if st["status"] == "scored":
                console.print(f"primary score: {st['primary_score']}")
            else:
                err_console.print(f"failed: {st.get('error')}")
                raise typer.Exit(1)
