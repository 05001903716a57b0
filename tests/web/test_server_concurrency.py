"""A real uvicorn server under more concurrent requests than it has database connections.

Regression: with FastAPI's sync routes, a finished route keeps its request's database
session (and connection) until its response is serialised on a worker thread; with more
clients than connections, every thread could wait for a connection held by a request that
waits for a thread, and the server hung until the pool timed out (30 s, then 500s).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.db.engine import POOL_CAPACITY
from medarena.web.app import create_app


@pytest.fixture
def catalogue(db_url: str, tmp_path: Path) -> Iterator[Catalogue]:
    settings = get_settings(data_dir=tmp_path / "data", database_url=db_url, secret_key="s" * 32)
    cat = open_catalogue(settings)
    yield cat
    cat.close()


@pytest.fixture
def live_url(catalogue: Catalogue) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(
        create_app(catalogue.settings, catalogue),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        backlog=512,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_many_clients_never_exhaust_the_connection_pool(live_url: str) -> None:
    clients = 4 * POOL_CAPACITY  # well beyond the connections one process may hold
    start = threading.Barrier(clients)

    def call(_: int) -> tuple[int, float]:
        with httpx.Client(timeout=25) as c:
            start.wait()
            t0 = time.perf_counter()
            codes = [c.get(f"{live_url}/api/v1/challenges").status_code for _ in range(3)]
            return max(codes), time.perf_counter() - t0

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(call, range(clients)))
    assert {code for code, _ in results} == {200}
    # A hang ends only when the pool gives up after 30 s; served requests take well under.
    assert max(t for _, t in results) < 20
    # The server still answers afterwards.
    assert httpx.get(f"{live_url}/healthz", timeout=5).status_code == 200
