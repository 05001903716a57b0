from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from medarena.errors import IntegrityError, NotFoundError
from medarena.storage import LocalObjectStore


def test_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    d1 = store.put_bytes(b"hello")
    d2 = store.put_stream(io.BytesIO(b"hello"))
    assert d1 == d2 == hashlib.sha256(b"hello").hexdigest()
    assert list(store.iter_digests()) == [d1]
    assert store.get_bytes(d1) == b"hello"
    assert store.size(d1) == 5


def test_corruption_is_detected_on_read(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    d = store.put_bytes(b"payload")
    path = store.path_of(d)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=d):
        store.get_bytes(d)
    with pytest.raises(IntegrityError):
        store.open(d)


def test_missing_object_and_bad_digest(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with pytest.raises(NotFoundError):
        store.get_bytes("0" * 64)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.get_bytes("../../etc/passwd")


def test_size_limit_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with pytest.raises(ValueError, match="size limit"):
        store.put_stream(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert list(store.iter_digests()) == []
    assert os.listdir(tmp_path / ".tmp") == []


def test_interrupted_write_leaves_no_object(tmp_path: Path) -> None:
    class Exploding(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"a" * 1000

    store = LocalObjectStore(tmp_path)
    with pytest.raises(OSError):
        store.put_stream(Exploding())  # type: ignore[arg-type]
    assert list(store.iter_digests()) == []
    assert os.listdir(tmp_path / ".tmp") == []


def test_concurrent_writers_of_same_content(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    data = os.urandom(1 << 20)
    digests: list[str] = []
    threads = [
        threading.Thread(target=lambda: digests.append(store.put_bytes(data))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(digests)) == 1
    assert store.get_bytes(digests[0]) == data


def test_copy_to_streams_verified_bytes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "s")
    d = store.put_bytes(b"abc" * 1000)
    store.copy_to(d, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == b"abc" * 1000
