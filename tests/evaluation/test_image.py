"""Tests of image-to-image metrics by hand, against scikit-image and the fastMRI convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medarena.errors import InputError
from medarena.evaluation.image import image_metrics, nmse, psnr, ssim


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    x, y = np.mgrid[0:24, 0:20]
    base = np.exp(-((x - 12) ** 2 + (y - 10) ** 2) / 60.0)
    vol = np.stack([base * (1 + 0.1 * k) for k in range(8)], axis=-1) * 100
    return vol + rng.normal(0, 1, vol.shape)


def test_psnr_by_hand() -> None:
    ref = np.zeros((8, 8))
    ref[0, 0] = 10.0
    pred = ref + 0.5  # MSE 0.25, data range = max(ref) = 10
    assert psnr(pred, ref) == pytest.approx(10 * math.log10(100 / 0.25))
    # ref_range = 10 - 0 here too; an explicit range changes the value
    assert psnr(pred, ref, data_range=20.0) == pytest.approx(10 * math.log10(400 / 0.25))
    assert psnr(ref, ref) == math.inf


def test_fastmri_convention_matches_skimage(volume: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    pred = volume + rng.normal(0, 3, volume.shape)
    dr = volume.max()
    m = image_metrics(pred, volume)
    assert m["data_range"] == pytest.approx(dr)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(volume, pred, data_range=dr))
    per_slice = [
        structural_similarity(volume[..., k], pred[..., k], data_range=dr) for k in range(8)
    ]
    assert m["ssim"] == pytest.approx(np.mean(per_slice))
    # fastMRI stores (slice, H, W) and loops over axis 0: same value with slice_axis=0
    moved = np.moveaxis(volume, -1, 0), np.moveaxis(pred, -1, 0)
    assert ssim(moved[1], moved[0], slice_axis=0) == pytest.approx(m["ssim"])
    assert m["nmse"] == pytest.approx(
        np.linalg.norm(volume - pred) ** 2 / np.linalg.norm(volume) ** 2
    )


def test_ssim_depends_on_slice_axis(volume: np.ndarray) -> None:
    pred = volume * 0.9
    assert ssim(pred, volume, slice_axis=-1) != pytest.approx(ssim(pred, volume, slice_axis=0))


def test_mask_restricts_mae_rmse_only() -> None:
    ref = np.full((10, 10), 4.0)
    pred = ref.copy()
    pred[:5] += 2.0  # error 2 on the top half
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :5] = True
    mask[5:, 5:] = True  # half of the mask has error 2, half 0
    m = image_metrics(pred, ref, mask=mask)
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(2.0))
    whole = image_metrics(pred, ref)
    assert whole["psnr"] == pytest.approx(m["psnr"])
    assert nmse(np.zeros((8, 8)), np.ones((8, 8))) == pytest.approx(1.0)


def test_data_range_options() -> None:
    ref = np.linspace(-1000, 1000, 64).reshape(8, 8)
    pred = ref + 10
    assert image_metrics(pred, ref, data_range="ref_range")["data_range"] == pytest.approx(2000)
    with pytest.raises(InputError, match="positive"):
        image_metrics(pred - 5000, ref - 5000)  # max of the reference is negative
    with pytest.raises(InputError, match="data_range"):
        psnr(pred, ref, data_range="max")  # type: ignore[arg-type]


def test_bad_input() -> None:
    with pytest.raises(InputError, match="same shape"):
        image_metrics(np.zeros((8, 8)), np.ones((8, 9)))
    bad = np.ones((8, 8))
    bad[2, 2] = np.nan
    with pytest.raises(InputError, match="finite"):
        image_metrics(bad, np.ones((8, 8)))
    with pytest.raises(InputError, match="7x7"):
        ssim(np.ones((8, 8, 4)), np.ones((8, 8, 4)), slice_axis=0)
    with pytest.raises(InputError, match="mask"):
        image_metrics(np.ones((8, 8)), np.ones((8, 8)), mask=np.zeros((8, 8)))
