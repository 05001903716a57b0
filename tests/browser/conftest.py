"""Fixtures of the browser tests: a real `medarena serve` subprocess and Debian's Chromium.

The server runs on 127.0.0.1 with its own data dir, prepared here: a small NIfTI dataset
('brain', split 'challenge' with a hidden 'test' subset) and a platform admin created with
`medarena users create --admin --password-stdin`. Playwright drives /usr/lib/chromium/chromium
(the Debian package); `playwright install` is never used.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from browser.dataset import N_CASES, PASSWORD, SHAPE, label_of
from medarena.config import get_settings
from medarena.datasets.catalogue import make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec

CHROMIUM = Path(os.environ.get("MEDARENA_TEST_CHROMIUM", "/usr/lib/chromium/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
INSTALL_HINT = "run ./scripts/install --test (Debian package chromium and pip playwright)"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
BIN = Path(sys.executable).parent
WORKERS = ("--workers", "1")

ORGANIZER_EMAIL = "organizer@example.org"


def _write_dataset(root: Path) -> None:
    """``N_CASES`` tiny NIfTI images with label maps, in the generic layout."""
    (root / "labels").mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for i in range(N_CASES):
        key = f"case{i:02d}"
        img = np.random.default_rng(i).normal(100, 10, SHAPE).astype(np.float32)
        nib.save(nib.Nifti1Image(img, affine), root / f"{key}.nii.gz")
        nib.save(nib.Nifti1Image(label_of(key), affine), root / "labels" / f"{key}.nii.gz")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _medarena(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    res = subprocess.run(
        [str(BIN / "medarena"), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, f"medarena {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout


@dataclass
class Server:
    """A running `medarena serve` and how to reach and administer it."""

    url: str
    data_dir: Path
    env: dict[str, str]

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """Run a `medarena` command against this server's data dir."""
        return _medarena(self.env, *args, stdin=stdin)


@contextmanager
def running_server(env: dict[str, str], data_dir: Path, log_path: Path) -> Iterator[Server]:
    """`medarena serve --workers 1` on a free port of 127.0.0.1 over ``data_dir``, until exit."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(BIN / "medarena"), "serve", "--host", "127.0.0.1", "--port", str(port), *WORKERS],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v1/challenges", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"medarena serve did not start; see {log_path}")
            time.sleep(0.2)
        yield Server(url, data_dir, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (git-ignored); kept after the run for CI to upload."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Server]:
    """`medarena serve --workers 1` on a free port of 127.0.0.1, with data and an organizer."""
    base = tmp_path_factory.mktemp("browser-server")
    data_dir = base / "data"
    cat = open_catalogue(get_settings(data_dir=data_dir))
    _write_dataset(base / "src")
    summary = ingest(cat, base / "src", "brain")
    assert summary.cases_added == N_CASES and not summary.issues
    make_split(
        cat,
        "brain",
        SplitSpec(name="challenge", ratios=(0.6, 0.2, 0.2), group_by=None, hidden=("test",)),
    )
    cat.close()
    shutil.rmtree(base / "src")

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDARENA_")}
    env["MEDARENA_DATA_DIR"] = str(data_dir)
    _medarena(
        env,
        "users",
        "create",
        ORGANIZER_EMAIL,
        "--admin",
        "--name",
        "Organizer",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    with running_server(env, data_dir, artifacts / "server.log") as srv:
        yield srv


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (fails, not skips, when it is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed: {INSTALL_HINT}")
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: {INSTALL_HINT}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser: Any, server: Server) -> Iterator[Any]:
    """Factory of pages, each in its own browser context (own cookies: one user each)."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 900) -> Any:
        ctx = browser.new_context(
            base_url=server.url,
            viewport={"width": width, "height": height},
            accept_downloads=True,
        )
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()
