"""Safe extraction of a participant's predictions archive (zip or tar), with every problem listed.

An upload is untrusted: before one byte is written outside a temporary folder, every member
is checked, and the whole archive is refused with the list of problems when any is found:

- a name that is absolute (``/x``, ``C:\\x``, ``\\\\host\\x``), climbs out (``..``) or holds a
  NUL or a backslash;
- a member that is not a regular file or a folder: symbolic links, hard links, devices, FIFOs;
- more files than ``max_files`` (counted while reading, so a tar of a million headers stops
  early), more declared bytes than ``max_total_bytes`` or a single member above
  ``max_member_bytes``;
- a zip member whose compression ratio exceeds ``max_ratio`` (a zip bomb), and, while writing,
  any member that inflates beyond its declared size (a lying header);
- two members with the same file name once folders are dropped (the case id would be
  ambiguous), and an archive without a single regular file.

Files are written flat into the destination under their base names, created exclusively
(``O_EXCL | O_NOFOLLOW``) so that nothing outside the folder can be reached, and the bytes
actually written are counted against the caps again: a member's declared size is only
trusted as an upper bound.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from medarena.errors import InputError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Folders and files that archivers add on their own; they are skipped, not refused.
_IGNORED_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")
_MAX_LISTED = 50


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that bound what an archive may unpack to (defaults suit a predictions upload)."""

    max_files: int = 5000
    max_total_bytes: int = 20 * 1024**3
    max_member_bytes: int = 4 * 1024**3
    # deflate reaches ~1000:1 on constant data; label maps of real predictions stay far
    # below, but an all-background mask compresses very well, so the cap is generous.
    max_ratio: float = 2000.0


class ArchiveError(InputError):
    """The archive was refused; ``problems`` lists every reason, one line each."""

    def __init__(self, archive: str, problems: list[str]) -> None:
        self.archive = archive
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED]
        more = len(self.problems) - len(shown)
        text = f"archive refused ({len(self.problems)} problem(s)): " + "; ".join(shown)
        if more > 0:
            text += f"; and {more} more"
        super().__init__(text, path=archive)


@dataclass(frozen=True)
class ExtractedFile:
    """One file written by :func:`extract_archive`: its member name and where it went."""

    member: str
    path: Path
    size: int


@dataclass
class _Member:
    name: str
    kind: str  # file | dir | symlink | hardlink | other
    size: int
    compressed: int | None = None  # zip only
    handle: object = None


def archive_format(path: Path) -> str:
    """``zip`` or ``tar`` from the file's content (never its name); InputError otherwise."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"PK":
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError, EOFError):
        pass
    raise InputError(
        "not a zip or tar archive (plain, .tar.gz, .tar.bz2 or .tar.xz)",
        path=path.name,
        hint="pack the prediction files with zip or tar",
    )


def name_problem(name: str) -> str | None:
    """Why a member name is unsafe (absolute, climbing out, odd characters), or None."""
    if "\x00" in name:
        return "name holds a NUL character"
    if "\\" in name:
        return "name holds a backslash (Windows path): use '/' between folders"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path: members must be relative"
    if ".." in PurePosixPath(name).parts:
        return "path climbs out of the archive ('..')"
    return None


def _ignored(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(p in _IGNORED_PARTS or p.startswith("._") for p in parts)


def _zip_members(zf: zipfile.ZipFile, limits: ArchiveLimits) -> Iterator[_Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            kind = "symlink"
        elif info.is_dir():
            kind = "dir"
        elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # zip writers often store permission bits alone (no file type): a plain file
            kind = "other"
        else:
            kind = "file"
        yield _Member(info.filename, kind, info.file_size, info.compress_size, info)


def _tar_members(tf: tarfile.TarFile, limits: ArchiveLimits) -> Iterator[_Member]:
    for ti in tf:
        if ti.issym():
            kind = "symlink"
        elif ti.islnk():
            kind = "hardlink"
        elif ti.isdir():
            kind = "dir"
        elif ti.isreg():
            kind = "file"
        else:
            kind = "other"
        yield _Member(ti.name, kind, ti.size, None, ti)


def _check_members(
    members: Iterator[_Member], limits: ArchiveLimits
) -> tuple[list[_Member], list[str]]:
    """Files to extract and the problems found (all of them, up to the file cap)."""
    problems: list[str] = []
    files: list[_Member] = []
    seen: dict[str, str] = {}
    total = 0
    count = 0
    for m in members:
        count += 1
        if count > limits.max_files:
            problems.append(
                f"more than {limits.max_files} members: the archive holds too many files"
            )
            break
        why = name_problem(m.name)
        if why is not None:
            problems.append(f"{m.name!r}: {why}")
            continue
        if m.kind == "symlink":
            problems.append(f"{m.name!r}: symbolic links are not allowed")
            continue
        if m.kind == "hardlink":
            problems.append(f"{m.name!r}: hard links are not allowed")
            continue
        if m.kind == "other":
            problems.append(f"{m.name!r}: only regular files and folders are allowed")
            continue
        if m.kind == "dir" or _ignored(m.name):
            continue
        base = PurePosixPath(m.name).name
        if not _SAFE_NAME.match(base):
            problems.append(
                f"{m.name!r}: file name must start with a letter or digit and use only "
                "letters, digits, '.', '_', '+' and '-'"
            )
            continue
        if m.size > limits.max_member_bytes:
            problems.append(
                f"{m.name!r}: unpacks to {m.size} bytes, above the cap of "
                f"{limits.max_member_bytes} bytes per file"
            )
            continue
        if m.compressed is not None and m.size > 0:
            ratio = m.size / max(m.compressed, 1)
            if ratio > limits.max_ratio:
                problems.append(
                    f"{m.name!r}: compression ratio {ratio:.0f}:1 exceeds "
                    f"{limits.max_ratio:.0f}:1 (zip bomb)"
                )
                continue
        total += m.size
        key = base.lower()  # case-insensitive file systems would merge these
        if key in seen:
            problems.append(f"{m.name!r}: same file name as {seen[key]!r} (duplicate)")
            continue
        seen[key] = m.name
        files.append(m)
    if total > limits.max_total_bytes:
        problems.append(
            f"unpacks to {total} bytes, above the cap of {limits.max_total_bytes} bytes"
        )
    if not problems and not files:
        problems.append("the archive holds no file (empty archive)")
    return files, problems


def _copy_capped(src: IO[bytes], dest: Path, cap: int, member: str) -> int:
    """Copy at most ``cap`` bytes into a new file; a longer stream is a refused member."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(dest, flags, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise _Overflow(member)
            out.write(chunk)
    return written


class _Overflow(Exception):
    pass


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    limits: ArchiveLimits | None = None,
    display_name: str | None = None,
) -> list[ExtractedFile]:
    """Check every member of ``archive`` and, when all pass, write its files flat into ``dest``.

    ``dest`` must be an empty folder that the caller owns (a temporary folder). Raises
    :class:`ArchiveError` listing every problem (nothing is written, or what was written is
    removed), or :class:`InputError` when the file is no readable archive. ``display_name``
    (the uploaded file name) is used in messages instead of the local path.
    """
    limits = limits or ArchiveLimits()
    shown = display_name or archive.name
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise InputError("extraction folder must be empty", path=dest)
    fmt = archive_format(archive)
    try:
        if fmt == "zip":
            return _extract_zip(archive, dest, limits, shown)
        return _extract_tar(archive, dest, limits, shown)
    except ArchiveError:
        _clear(dest)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        _clear(dest)
        # zlib/lzma errors surface as OSError/ValueError; the reason is not user data.
        raise InputError(
            f"archive is damaged and cannot be read ({type(exc).__name__}: {exc})", path=shown
        ) from None


def _extract_zip(
    archive: Path, dest: Path, limits: ArchiveLimits, shown: str
) -> list[ExtractedFile]:
    with zipfile.ZipFile(archive) as zf:
        files, problems = _check_members(_zip_members(zf, limits), limits)
        if problems:
            raise ArchiveError(shown, problems)
        out: list[ExtractedFile] = []
        total = 0
        for m in files:
            info = m.handle
            assert isinstance(info, zipfile.ZipInfo)
            if info.flag_bits & 0x1:
                raise ArchiveError(shown, [f"{m.name!r}: encrypted member"])
            target = dest / PurePosixPath(m.name).name
            with zf.open(info) as src:
                n = _write_member(src, target, m, limits, total, shown)
            total += n
            out.append(ExtractedFile(m.name, target, n))
        return out


def _extract_tar(
    archive: Path, dest: Path, limits: ArchiveLimits, shown: str
) -> list[ExtractedFile]:
    # Streamed mode ("r|*") reads the archive once, front to back, never seeking: the
    # listing pass and the writing pass each read it, which keeps memory flat.
    with tarfile.open(archive, mode="r|*") as tf:
        files, problems = _check_members(_tar_members(tf, limits), limits)
    if problems:
        raise ArchiveError(shown, problems)
    wanted = {m.name for m in files}
    out: list[ExtractedFile] = []
    total = 0
    with tarfile.open(archive, mode="r|*") as tf:
        for ti in tf:
            if ti.name not in wanted or not ti.isreg():
                continue
            wanted.discard(ti.name)  # a repeated name was refused above; take the first
            src = tf.extractfile(ti)
            if src is None:
                continue
            m = _Member(ti.name, "file", ti.size)
            target = dest / PurePosixPath(ti.name).name
            n = _write_member(src, target, m, limits, total, shown)
            total += n
            out.append(ExtractedFile(ti.name, target, n))
    return out


def _write_member(
    src: IO[bytes], target: Path, m: _Member, limits: ArchiveLimits, total: int, shown: str
) -> int:
    cap = min(m.size, limits.max_member_bytes, limits.max_total_bytes - total)
    try:
        return _copy_capped(src, target, cap, m.name)
    except _Overflow:
        raise ArchiveError(
            shown, [f"{m.name!r}: unpacks to more than its declared {m.size} bytes (zip bomb)"]
        ) from None


def _clear(dest: Path) -> None:
    for p in dest.iterdir():
        if p.is_file() and not p.is_symlink():
            p.unlink()
