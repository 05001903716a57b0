"""Actions the browser tests repeat: sign up, log in, join, download, build prediction archives."""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from playwright.sync_api import Page, expect

from browser.dataset import PASSWORD, SHAPE, label_of

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def signup(page: Page, email: str, name: str) -> None:
    """Create an account through the sign-up form (it logs the new user in)."""
    page.goto("/signup")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Name shown to others").fill(name)
    page.get_by_label("Password", exact=False).first.fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("link", name=name)).to_be_visible()


def login(page: Page, email: str, name: str, password: str = PASSWORD) -> None:
    """Log in through the login form."""
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name=name)).to_be_visible()


def join_and_create_team(page: Page, challenge_title: str, team: str) -> None:
    """From the challenge list: open the challenge, accept its rules, create a team."""
    page.goto("/challenges")
    page.get_by_role("link", name=challenge_title).click()
    page.get_by_label("I accept the rules above").check()
    page.get_by_role("button", name="Join the challenge").click()
    page.get_by_label("Team name").fill(team)
    page.get_by_role("button", name="Create team").click()
    expect(page.get_by_role("heading", name=team)).to_be_visible()


def download(page: Page, link_name: str, dest: Path) -> zipfile.ZipFile:
    """Click a download link of the current page and open the zip it saves."""
    with page.expect_download() as info:
        page.get_by_role("link", name=link_name).click()
    info.value.save_as(dest)
    return zipfile.ZipFile(dest)


def case_ids(zf: zipfile.ZipFile, folder: str) -> list[str]:
    """Case ids of the ``<folder>/<case>.nii.gz`` members of a downloaded zip."""
    pat = re.compile(rf"^{folder}/(case\d\d)\.nii\.gz$")
    return sorted(m.group(1) for n in zf.namelist() if (m := pat.match(n)))


def _nifti_bytes(arr: np.ndarray) -> bytes:
    img = nib.Nifti1Image(arr, AFFINE)
    return bytes(img.to_bytes())  # type: ignore[no-untyped-call]


def nifti_archive(
    path: Path, cases: list[str], predict: Callable[[str], np.ndarray] = label_of
) -> Path:
    """A predictions zip: ``<case>.nii.gz`` for each case, from ``predict``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key in cases:
            raw = _nifti_bytes(predict(key).astype(np.uint8))
            zf.writestr(f"{key}.nii.gz", gzip.compress(raw))
    path.write_bytes(buf.getvalue())
    return path


def shifted(key: str) -> np.ndarray:
    """A worse prediction: the reference label moved by one voxel."""
    return np.roll(label_of(key), 1, axis=1)


def broken_archive(path: Path, cases: list[str]) -> Path:
    """An archive that must be refused: an unknown case id and a wrong shape."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("nosuchcase.nii.gz", gzip.compress(_nifti_bytes(np.zeros(SHAPE, np.uint8))))
        zf.writestr(
            f"{cases[0]}.nii.gz", gzip.compress(_nifti_bytes(np.zeros((3, 3, 3), np.uint8)))
        )
    return path


def drop_file(page: Page, selector: str, path: Path, mime: str = "application/zip") -> None:
    """Drag and drop ``path`` onto the element ``selector`` (a DataTransfer built in the page)."""
    data = list(path.read_bytes())
    handle: Any = page.evaluate_handle(
        """([bytes, name, mime]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
            return dt;
        }""",
        [data, path.name, mime],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": handle})
    page.dispatch_event(selector, "drop", {"dataTransfer": handle})


def page_fits(page: Page) -> bool:
    """Whether the document is no wider than the viewport (no sideways scrolling of the page)."""
    scroll, client = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    return bool(scroll <= client + 1)
