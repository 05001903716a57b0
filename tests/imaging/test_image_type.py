"""The Image type: validation rules, LPS affine and its RAS (NIfTI) twin, hand-computed."""

from __future__ import annotations

import numpy as np
import pytest
from imaging_helpers import rotation

from medarena.errors import InputError
from medarena.imaging import Image, from_ras_affine


def test_affine_maps_voxel_index_to_lps_world() -> None:
    rot = rotation(np.array([0.0, 0.0, 1.0]), 90)  # i -> +P (y), j -> -L (x)
    img = Image(np.zeros((4, 3, 2), np.int16), (0.5, 2.0, 3.0), (10.0, 20.0, 30.0), rot)
    world = img.affine @ np.array([2, 1, 1, 1.0])
    # 10 + 1*2.0*(-1) in x, 20 + 2*0.5*(+1) in y, 30 + 1*3.0 in z
    np.testing.assert_allclose(world[:3], [8.0, 21.0, 33.0], atol=1e-12)
    ras = img.nifti_affine() @ np.array([2, 1, 1, 1.0])
    np.testing.assert_allclose(ras[:3], [-8.0, -21.0, 33.0], atol=1e-12)
    assert img.ndim == 3 and img.shape == (4, 3, 2) and img.channels == 1


def test_from_ras_affine_inverts_nifti_affine() -> None:
    rot = rotation(np.array([1.0, -0.5, 2.0]), 33)
    img = Image(np.zeros((3, 4, 5), np.float32), (0.7, 0.9, 2.5), (-1.0, 2.0, 40.0), rot)
    back = from_ras_affine(img.array, img.nifti_affine())
    np.testing.assert_allclose(back.spacing, img.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, img.origin, atol=1e-12)
    np.testing.assert_allclose(back.direction, img.direction, atol=1e-12)


def test_2d_image_with_channels() -> None:
    img = Image(np.zeros((5, 4, 3), np.uint8), (0.2, 0.3))
    assert img.ndim == 2 and img.shape == (5, 4) and img.channels == 3
    assert img.affine.shape == (3, 3) and img.nifti_affine().shape == (4, 4)
    np.testing.assert_allclose(img.nifti_affine()[:3, :3], np.diag([-0.2, -0.3, 1.0]))


@pytest.mark.parametrize(
    "kwargs, rule",
    [
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be positive"),
        ({"spacing": (1.0, -2.0, 1.0)}, "spacing must be positive"),
        ({"spacing": (1.0,)}, "2 or 3 spatial axes"),
        ({"array": np.zeros((2, 2))}, "does not fit 3 spatial axes"),
        ({"origin": (1.0, 2.0)}, "origin must have 3 values"),
        ({"direction": np.eye(2)}, "direction must be a 3x3 matrix"),
        ({"direction": np.diag([1.0, 1.0, 1.1])}, "orthonormal"),
        ({"direction": np.array([[1, 0.1, 0], [0, 1, 0], [0, 0, 1.0]])}, "orthonormal"),
        ({"kind": "label"}, "integer dtype"),
        ({"kind": "mask"}, "kind must be"),
        ({"array": [[[0.0]]]}, "must be a numpy array"),
    ],
)
def test_invalid_images_name_the_rule(kwargs: dict[str, object], rule: str) -> None:
    args: dict[str, object] = {"array": np.zeros((2, 2, 2), np.float32), "spacing": (1, 1, 1)}
    args.update(kwargs)
    with pytest.raises(InputError, match=rule):
        Image(**args)  # type: ignore[arg-type]


def test_with_array_keeps_geometry_and_checks_shape() -> None:
    img = Image(np.zeros((3, 3, 2), np.float32), (1.0, 1.0, 2.0), (5.0, 6.0, 7.0))
    lab = img.with_array(np.ones((3, 3, 2), np.uint8), kind="label")
    assert lab.kind == "label" and lab.origin == img.origin and lab.spacing == img.spacing
    with pytest.raises(InputError, match="does not match"):
        img.with_array(np.zeros((3, 2, 2)))
    with pytest.raises(InputError, match="integer dtype"):
        img.with_array(np.zeros((3, 3, 2), np.float32), kind="label")


def test_repr_is_short_and_names_geometry() -> None:
    text = repr(Image(np.zeros((300, 300, 300), np.uint8), (1.0, 1.0, 2.0), kind="label"))
    assert len(text) < 200 and "(300, 300, 300)" in text and "label" in text
