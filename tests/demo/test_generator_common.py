"""Shared generator pieces: independent random streams, argument checks, byte-stable writers."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medarena.demo.generators.common import (
    Cohort,
    begin,
    case_rng,
    check_args,
    describe,
    nifti_bytes,
    split_ids,
    vendors,
    write_csv,
)
from medarena.errors import InputError


def test_streams_of_names_sharing_a_prefix_differ() -> None:
    # "lowdose_ct" and "lowdose_ct/meta" once shared a stream (only 8 bytes were salted)
    for track in ("lowdose_ct", "lung_nodules", "brain_age"):
        a = case_rng(0, track, 0).random(4)
        b = case_rng(0, track + "/meta", 0).random(4)
        assert not np.allclose(a, b)
    np.testing.assert_array_equal(
        case_rng(3, "dose", 2).random(3), case_rng(3, "dose", 2).random(3)
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_train": -1}, "n_train"),
        ({"n_test": 1.5}, "n_test"),
        ({"n_train": 0, "n_test": 0}, "n_train + n_test"),
        ({"seed": -2}, "seed"),
        ({"size": "huge"}, "size"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"n_train": 2, "n_test": 1, "seed": 0, "size": "tiny", **kwargs}
    with pytest.raises(InputError, match=re.escape(field)):
        check_args(**args)  # type: ignore[arg-type]


def test_nifti_bytes_are_stable_and_carry_the_spacing(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    data = nifti_bytes(arr, (1.5, 2.0, 3.0))
    assert data == nifti_bytes(arr, (1.5, 2.0, 3.0))
    assert data[4:8] == b"\0\0\0\0"  # gzip MTIME field: no timestamp
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    np.testing.assert_array_equal(np.asarray(img.dataobj), arr)
    assert img.header.get_zooms() == (1.5, 2.0, 3.0)
    assert not img.header["descrip"].tobytes().strip(b"\0")
    out = write_csv(tmp_path / "x.csv", ["case_id", "v"], [("b", 0.5), ("a", 1)])
    assert out.read_text() == "case_id,v\na,1\nb,0.5000\n"
    assert b"\r" not in out.read_bytes()


def test_begin_and_describe_frame_a_generator(tmp_path: Path) -> None:
    """begin refuses a used folder before drawing; describe lists the split and the files."""
    cohort = Cohort("t", "ab", vendors({"s1": ("Acme", 1.0), "s2": ("Zed", 2.0)}), (40, 41))
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.txt").write_text("x")
    with pytest.raises(InputError, match="out_dir"):
        begin(cohort, used, 2, 1, 0, "tiny")
    root, subjects = begin(cohort, tmp_path / "new", 2, 1, 0, "tiny")
    assert [(s.case_id, s.manufacturer, s.test) for s in subjects] == [
        ("ab-0001", "Acme", False),
        ("ab-0002", "Zed", False),
        ("ab-0003", "Acme", True),
    ]
    assert split_ids(subjects) == (("ab-0001", "ab-0002"), ("ab-0003",))
    root.mkdir()
    write_csv(root / "ref.csv", ("case_id",), [("ab-0003",)])
    track = describe(
        root,
        subjects,
        track="t",
        task="regression",
        task_config={},
        ingest_dir=root,
        reference=root / "ref.csv",
        channels=("x",),
        label_names={},
        real_parts=(),
        synthetic_parts=(),
        seed=0,
        size="tiny",
        notes={},
    )
    assert (track.train_ids, track.test_ids) == (("ab-0001", "ab-0002"), ("ab-0003",))
    assert track.files == ("ref.csv",)  # the manifest does not list itself
    assert (root / "track.json").is_file()
