"""Archive safety: every attack is a real archive crafted with zipfile/tarfile and refused."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from medarena.challenges.archives import (
    ArchiveError,
    ArchiveLimits,
    extract_archive,
    name_problem,
)
from medarena.errors import InputError


def _zip(path: Path, members: dict[str, bytes], *, deflate: bool = True) -> Path:
    comp = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", comp) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(
    path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes], gz: bool = False
) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for ti in members:
            payload = data.get(ti.name)
            if payload is not None:
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
            else:
                tf.addfile(ti)
    return path


def _reg(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.REGTYPE
    return ti


def _refused(archive: Path, dest: Path, **limits: float) -> ArchiveError:
    with pytest.raises(ArchiveError) as info:
        extract_archive(archive, dest, limits=ArchiveLimits(**limits))  # type: ignore[arg-type]
    assert list(dest.iterdir()) == [], "nothing may be left after a refusal"
    return info.value


def test_good_zip_extracts_flat(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {"preds/case1.nii.gz": b"a" * 10, "case2.csv": b"x,y\n"})
    out = extract_archive(arc, tmp_path / "out")
    assert sorted(f.path.name for f in out) == ["case1.nii.gz", "case2.csv"]
    assert (tmp_path / "out" / "case1.nii.gz").read_bytes() == b"a" * 10
    assert {f.member: f.size for f in out} == {"preds/case1.nii.gz": 10, "case2.csv": 4}


def test_good_tar_gz_extracts_and_skips_macos_junk(tmp_path: Path) -> None:
    arc = _tar(
        tmp_path / "p.tar.gz",
        [_reg("case1.nii"), _reg("__MACOSX/._case1.nii"), _reg("._case1.nii")],
        {"case1.nii": b"b" * 5, "__MACOSX/._case1.nii": b"junk", "._case1.nii": b"junk"},
        gz=True,
    )
    out = extract_archive(arc, tmp_path / "out")
    assert [f.path.name for f in out] == ["case1.nii"]


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../evil.nii.gz", "climbs out"),
        ("a/../../evil.nii.gz", "climbs out"),
        ("/etc/evil.nii.gz", "absolute path"),
        ("C:/evil.nii.gz", "absolute path"),
        ("a\\..\\evil.nii.gz", "backslash"),
    ],
)
def test_zip_path_traversal_refused(tmp_path: Path, name: str, rule: str) -> None:
    arc = _zip(tmp_path / "p.zip", {name: b"x", "ok.nii.gz": b"y"})
    err = _refused(arc, tmp_path / "out")
    assert len(err.problems) == 1 and rule in err.problems[0]
    assert "p.zip" in str(err)
    assert not (tmp_path / "evil.nii.gz").exists()


@pytest.mark.parametrize("name", ["../evil.nii", "/tmp/evil.nii"])
def test_tar_path_traversal_refused(tmp_path: Path, name: str) -> None:
    arc = _tar(tmp_path / "p.tar", [_reg(name)], {name: b"x"})
    err = _refused(arc, tmp_path / "out")
    assert name in err.problems[0]


def test_zip_symlink_refused(tmp_path: Path) -> None:
    arc = tmp_path / "p.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("case1.nii.gz")
        info.create_system = 3  # unix, so the mode bits are read
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    err = _refused(arc, tmp_path / "out")
    assert "symbolic link" in err.problems[0]


def test_tar_symlink_hardlink_and_device_refused(tmp_path: Path) -> None:
    sym = tarfile.TarInfo("a.nii")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("b.nii")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/shadow"
    dev = tarfile.TarInfo("c.nii")
    dev.type = tarfile.CHRTYPE
    fifo = tarfile.TarInfo("d.nii")
    fifo.type = tarfile.FIFOTYPE
    arc = _tar(tmp_path / "p.tar", [sym, hard, dev, fifo], {})
    err = _refused(arc, tmp_path / "out")
    assert len(err.problems) == 4
    text = " ".join(err.problems)
    assert "symbolic links" in text and "hard links" in text and "regular files" in text


def test_zip_bomb_ratio_refused(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {"case1.nii": bytes(2_000_000)})
    err = _refused(arc, tmp_path / "out", max_ratio=100.0)
    assert "compression ratio" in err.problems[0] and "zip bomb" in err.problems[0]


def test_total_uncompressed_cap(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {f"c{i}.nii": bytes(400) for i in range(3)}, deflate=False)
    err = _refused(arc, tmp_path / "out", max_total_bytes=1000)
    assert "above the cap of 1000 bytes" in err.problems[0]
    err = _refused(arc, tmp_path / "out", max_member_bytes=300)
    assert len(err.problems) == 3 and "per file" in err.problems[0]


def test_file_count_cap_stops_reading(tmp_path: Path) -> None:
    arc = _tar(
        tmp_path / "p.tar.gz",
        [_reg(f"c{i}.nii") for i in range(30)],
        {f"c{i}.nii": b"x" for i in range(30)},
        gz=True,
    )
    err = _refused(arc, tmp_path / "out", max_files=20)
    assert "more than 20 members" in err.problems[-1]


def test_lying_zip_header_never_writes_beyond_declared_size(tmp_path: Path) -> None:
    """A member whose header declares 10 bytes but inflates to 1 MB (edited header)."""
    arc = _zip(tmp_path / "p.zip", {"case1.nii": bytes(1_000_000)})
    raw = bytearray(arc.read_bytes())
    true_size = struct.pack("<I", 1_000_000)
    fake = struct.pack("<I", 10)
    # uncompressed-size fields of the local header (offset 22) and central directory
    assert raw.count(true_size) == 2
    raw = raw.replace(true_size, fake)
    arc.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    with pytest.raises(InputError) as info:
        extract_archive(arc, dest)
    assert "p.zip" in str(info.value)
    assert list(dest.iterdir()) == []


def test_duplicate_names_refused(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {"a/case1.nii.gz": b"x", "b/case1.nii.gz": b"y"})
    err = _refused(arc, tmp_path / "out")
    assert "duplicate" in err.problems[0]
    arc2 = _zip(tmp_path / "q.zip", {"Case1.csv": b"x", "case1.csv": b"y"})
    assert "duplicate" in _refused(arc2, tmp_path / "out2").problems[0]


def test_empty_archives_refused(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {})
    assert "empty archive" in _refused(arc, tmp_path / "out").problems[0]
    folder_only = tarfile.TarInfo("preds")
    folder_only.type = tarfile.DIRTYPE
    arc2 = _tar(tmp_path / "p.tar", [folder_only], {})
    assert "empty archive" in _refused(arc2, tmp_path / "out2").problems[0]


def test_all_problems_listed_together(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {"../a.nii": b"x", "/b.nii": b"y", "bad name.nii": b"z"})
    err = _refused(arc, tmp_path / "out")
    assert len(err.problems) == 3
    assert "3 problem(s)" in str(err)


def test_not_an_archive_and_damaged_archive(tmp_path: Path) -> None:
    junk = tmp_path / "p.zip"
    junk.write_bytes(b"hello, this is not an archive at all" * 20)
    with pytest.raises(InputError, match="not a zip or tar archive"):
        extract_archive(junk, tmp_path / "out")
    arc = _zip(tmp_path / "q.zip", {"case1.nii": bytes(range(256)) * 100})
    arc.write_bytes(arc.read_bytes()[:-30])  # cut into the end-of-central-directory record
    with pytest.raises(InputError, match="damaged"):
        extract_archive(arc, tmp_path / "out2")


def test_destination_must_be_empty(tmp_path: Path) -> None:
    arc = _zip(tmp_path / "p.zip", {"case1.nii": b"x"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(InputError, match="must be empty"):
        extract_archive(arc, tmp_path / "out")
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def test_name_problem_accepts_plain_relative_names() -> None:
    assert name_problem("preds/case_001.nii.gz") is None
    assert name_problem("a/./b.nii") is None
    assert name_problem("x\x00.nii") is not None
