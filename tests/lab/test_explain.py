"""Explanation methods (medarena.lab.explain) on networks whose answer is known.

The quadrant network: a 2-D CNN whose class-1 evidence is bright pixels (a 3x3 box filter
followed by a ReLU, then global average pooling); an image that is bright only in its top
left quadrant must get its Grad-CAM and occlusion mass in that quadrant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medarena.errors import InputError
from medarena.lab.explain import (
    default_target_layer,
    grad_cam,
    occlusion_map,
    occlusion_maps,
    probability_maps,
    resize_map,
)

SIDE = 16


class _Quadrant(torch.nn.Module):
    """Class 1's logit is the mean of a box-filtered image's positive part; class 0's is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0] = 1.0 / 9  # channel 0: brightness; channel 1: nothing
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.act(self.conv(x))).flatten(1))


def _bright_top_left(rng: np.random.Generator) -> torch.Tensor:
    x = rng.normal(0.0, 0.05, (1, 1, SIDE, SIDE)).astype(np.float32)
    x[0, 0, : SIDE // 2, : SIDE // 2] += 1.0
    return torch.from_numpy(x)


def _quadrant_share(m: np.ndarray) -> float:
    return float(m[: SIDE // 2, : SIDE // 2].sum() / m.sum())


def test_grad_cam_mass_is_in_the_evidence_quadrant_and_equals_monai() -> None:
    from monai.visualize import GradCAM

    net = _Quadrant().eval()
    x = _bright_top_left(np.random.default_rng(0))
    assert int(net(x).argmax()) == 1
    heat, cls, layer = grad_cam(net, x)
    assert (cls, layer) == (1, "act")  # the last feature map: the ReLU after the convolution
    assert heat.shape == (SIDE, SIDE) and heat.dtype == np.float32
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0.0
    assert _quadrant_share(heat) > 0.85  # the 3x3 filter spreads one pixel past the edge
    assert heat[SIDE // 2 + 1 :, :].max() < 0.05 and heat[:, SIDE // 2 + 1 :].max() < 0.05
    # MONAI's GradCAM called directly: its default normaliser maps (min, max) to (1, 0),
    # so 1 - its map is the map scaled to [0, 1] (the minimum here is 0): ours
    direct = GradCAM(nn_module=net, target_layers="act")(x, class_idx=1)[0, 0].numpy()
    np.testing.assert_allclose(heat, 1.0 - direct, atol=1e-5)
    raw = GradCAM(nn_module=net, target_layers="act", postprocessing=lambda t: t)
    m = raw(x, class_idx=1)[0, 0].detach().numpy()
    np.testing.assert_allclose(heat, m / m.max(), atol=1e-6)
    # another layer, named explicitly, is honoured; an unknown one is refused with its name
    assert grad_cam(net, x, target_layer="conv")[2] == "conv"
    with pytest.raises(InputError, match="no layer 'nope'"):
        grad_cam(net, x, target_layer="nope")
    with pytest.raises(InputError, match="class index must be between 0 and 1"):
        grad_cam(net, x, class_index=5)
    # class 0 has no evidence anywhere (its weights are 0): an all-zero map, not noise
    assert not grad_cam(net, x, class_index=0)[0].any()


def test_target_layer_of_the_lab_classifiers() -> None:
    from monai.networks.nets import DenseNet, ResNet

    dense = DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=3,
        init_features=4,
        growth_rate=4,
        block_config=(1, 1),
    )
    x = torch.randn(1, 1, 32, 32)
    assert default_target_layer(dense, x) == "class_layers.relu"
    heat, _, _ = grad_cam(dense, x)
    assert heat.shape == (32, 32) and heat.min() >= 0.0 and heat.max() <= 1.0
    res = ResNet(
        block="basic",
        layers=[1, 1, 1, 1],
        block_inplanes=[4, 4, 4, 4],
        spatial_dims=3,
        n_input_channels=1,
        num_classes=2,
    )
    x3 = torch.randn(1, 1, 32, 32, 32)
    layer = default_target_layer(res, x3)
    assert layer.startswith("layer4.") and layer.endswith("act")  # last block, before pooling
    assert grad_cam(res, x3)[0].shape == (32, 32, 32)
    with pytest.raises(InputError, match="no layer whose output is a feature map"):
        default_target_layer(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2)), x
        )


def test_occlusion_mass_is_in_the_evidence_quadrant() -> None:
    net = _Quadrant().eval()
    x = _bright_top_left(np.random.default_rng(1)).numpy()

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(a)).numpy()

    occ = occlusion_map(predict, x, 1, activation="softmax", n_batch=8)
    assert occ.shape == (SIDE, SIDE) and occ.max() == pytest.approx(1.0)
    assert _quadrant_share(occ) > 0.85
    # several outputs from one set of passes: the same maps as one call per output
    both = occlusion_maps(predict, x, [1, 0], activation="softmax", n_batch=8)
    np.testing.assert_allclose(both[0], occ, atol=1e-6)
    single0 = occlusion_map(predict, x, 0, activation="softmax", n_batch=8)
    np.testing.assert_allclose(both[1], single0, atol=1e-6)


def test_probability_maps_agree_with_the_argmax() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (3, 5, 4, 3))
    maps = probability_maps(logits, "softmax")
    assert maps.shape == (2, 5, 4, 3) and maps.dtype == np.float32
    background = 1.0 - maps.sum(axis=0)
    assert background.min() > -1e-6  # foreground probabilities sum to at most 1
    full = np.concatenate([background[None], maps])
    np.testing.assert_array_equal(np.argmax(full, axis=0), np.argmax(logits, axis=0))
    one = probability_maps(logits[:1], "sigmoid")
    np.testing.assert_array_equal(one[0] >= 0.5, logits[0] >= 0)
    assert probability_maps(np.array([[-1.0, 0.3, 2.0]]), "identity").tolist() == [
        [0.0, pytest.approx(0.3), 1.0]
    ]
    with pytest.raises(InputError, match="at least 2 channels"):
        probability_maps(logits[:1], "softmax")


def test_resize_map_keeps_the_range() -> None:
    m = np.zeros((4, 4), np.float32)
    m[:2, :2] = 1.0
    big = resize_map(m, (8, 8))
    assert big.shape == (8, 8) and big.min() >= 0.0 and big.max() <= 1.0
    assert big[:4, :4].sum() > big[4:, 4:].sum()
