"""Content-addressed object store.

Objects are addressed by the sha256 of their bytes. Writes are atomic (temp file
in the same directory, fsync, rename), so a killed process never leaves a
half-written object under a valid name; identical content is stored once; reads
verify the digest. :class:`ObjectStore` is the interface callers use; an
S3-compatible backend (fsspec) can implement it without touching them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from medarena.errors import IntegrityError, NotFoundError

_CHUNK = 1 << 20


class ObjectStore(Protocol):
    """What callers may do with stored objects."""

    def put_bytes(self, data: bytes) -> str: ...
    def put_file(self, path: Path) -> str: ...
    def put_stream(self, stream: BinaryIO, *, max_bytes: int | None = None) -> str: ...
    def get_bytes(self, digest: str) -> bytes: ...
    def open(self, digest: str) -> BinaryIO: ...
    def exists(self, digest: str) -> bool: ...
    def size(self, digest: str) -> int: ...
    def delete(self, digest: str) -> None: ...
    def iter_digests(self) -> Iterator[str]: ...


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"invalid object digest {digest!r}: must be 64 lowercase hex characters")
    return digest


class LocalObjectStore:
    """Objects as files under ``root/ab/cdef...`` (sha256 hex, two-level fan-out)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def path_of(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            self._commit_tmp(self._write_tmp([data]), digest)
        return digest

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as fh:
            return self.put_stream(fh)

    def put_stream(self, stream: BinaryIO, *, max_bytes: int | None = None) -> str:
        """Store a stream chunk by chunk; raises ValueError beyond ``max_bytes``."""
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        total = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise ValueError(f"upload exceeds the size limit of {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        digest = h.hexdigest()
        if self.exists(digest):
            os.unlink(tmp_name)
        else:
            self._commit_tmp(Path(tmp_name), digest)
        return digest

    def get_bytes(self, digest: str) -> bytes:
        path = self.path_of(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"object {digest} is not in the store at {self.root}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"object {digest} is corrupt: its content no longer matches")
        return data

    def open(self, digest: str) -> BinaryIO:
        """Open an object for reading after verifying its digest (streams the file once)."""
        path = self.path_of(digest)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            raise NotFoundError(f"object {digest} is not in the store at {self.root}") from None
        if h.hexdigest() != digest:
            raise IntegrityError(f"object {digest} is corrupt: its content no longer matches")
        return open(path, "rb")

    def exists(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path_of(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"object {digest} is not in the store at {self.root}") from None

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(digest).unlink()

    def iter_digests(self) -> Iterator[str]:
        for sub in sorted(self.root.iterdir()):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for f in sorted(sub.iterdir()):
                yield sub.name + f.name

    def copy_to(self, digest: str, dest: Path) -> None:
        """Write an object to ``dest`` (verified) without loading it whole."""
        with self.open(digest) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)

    def _write_tmp(self, chunks: list[bytes]) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        with os.fdopen(fd, "wb") as out:
            for c in chunks:
                out.write(c)
            out.flush()
            os.fsync(out.fileno())
        return Path(tmp_name)

    def _commit_tmp(self, tmp: Path, digest: str) -> None:
        dest = self.path_of(digest)
        dest.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)


def open_store(settings: object) -> LocalObjectStore:
    """Factory: the object store configured by ``settings``."""
    from medarena.config import Settings

    assert isinstance(settings, Settings)
    return LocalObjectStore(settings.resolved_store_dir)
