"""The block registry: every building block a recipe may name, with typed parameters.

A block is a name, a kind, a pydantic model of its parameters (each field documented)
and a builder that turns validated parameters plus the run's context into a MONAI or
PyTorch object. The registry is an explicit table (no scanning of modules), so what a
recipe can use is exactly what `medarena lab blocks` lists.

Kinds: ``preprocess`` (deterministic, applied once per case and cached; except
``rand_crop_by_label``, which draws a patch each step), ``augment`` (random, each step),
``network``, ``loss``, ``optimizer``, ``schedule``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medarena.errors import InputError

Kind = Literal["preprocess", "augment", "network", "loss", "optimizer", "schedule"]
KINDS: tuple[str, ...] = ("preprocess", "augment", "network", "loss", "optimizer", "schedule")
TaskType = Literal[
    "segmentation", "classification", "multilabel", "regression", "detection", "image_to_image"
]
TASK_TYPES: tuple[str, ...] = (
    "segmentation",
    "classification",
    "multilabel",
    "regression",
    "detection",
    "image_to_image",
)
# Tasks whose target is a map on the image grid (label map, heatmap, target image): spatial
# transforms move it with the image, training uses patches, inference sliding windows.
MAP_TASKS: tuple[str, ...] = ("segmentation", "detection", "image_to_image")


class Params(BaseModel):
    """Base of every block's parameters: unknown names are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Context:
    """What a builder needs to know about the run besides the block's own parameters."""

    task: TaskType
    spatial_dims: int
    in_channels: int = 1
    out_channels: int = 1
    epochs: int = 1
    patch_size: tuple[int, ...] = ()  # trainer.patch_size
    detection_mode: str = "heatmap"  # task.detection.mode

    @property
    def label_target(self) -> bool:
        """Whether the target map holds class indices (segmentation; detection's mode
        "segmentation"), so losses take indices and spatial blocks use nearest neighbour."""
        return self.task == "segmentation" or (
            self.task == "detection" and self.detection_mode == "segmentation"
        )

    @property
    def image_keys(self) -> tuple[str, ...]:
        """Keys of random intensity augmentation: the input image only."""
        return ("image",)

    @property
    def intensity_keys(self) -> tuple[str, ...]:
        """Keys of intensity preprocessing: image-to-image targets are normalised like inputs."""
        return ("image", "label") if self.task == "image_to_image" else ("image",)

    @property
    def keys(self) -> tuple[str, ...]:
        """Dictionary keys that spatial transforms move together (image, and a target map).

        The target map (key ``label``) is the label map (segmentation), the target heatmap
        (detection) or the target image (image_to_image).
        """
        return ("image", "label") if self.task in MAP_TASKS else ("image",)

    def modes(self, image: str, label: str = "nearest") -> tuple[str, ...]:
        """Interpolation per key: label maps always nearest, heatmaps and images as the image."""
        if self.label_target:
            return (image, label)
        return (image, image) if self.task in MAP_TASKS else (image,)


@dataclass(frozen=True)
class Block:
    """One registry entry."""

    name: str
    kind: Kind
    summary: str
    params: type[Params]
    build: Callable[[Any, Context], Any]
    tasks: tuple[str, ...] = TASK_TYPES
    random: bool = False  # drawn anew each step (never cached)

    def describe(self) -> dict[str, Any]:
        """The block as plain data: name, kind, summary, tasks and its parameters."""
        schema = self.params.model_json_schema()
        params = []
        for pname, field in self.params.model_fields.items():
            prop = schema.get("properties", {}).get(pname, {})
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            params.append(
                {
                    "name": pname,
                    "type": _type_name(prop),
                    "required": field.is_required(),
                    "default": list(default) if isinstance(default, tuple) else default,
                    "description": field.description or "",
                }
            )
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "tasks": list(self.tasks),
            "params": params,
        }


def _type_name(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " | ".join(_type_name(p) for p in prop["anyOf"])
    t = prop.get("type", "any")
    if t == "array":
        item = prop.get("items") or (prop.get("prefixItems") or [{}])[0]
        return f"list[{_type_name(item)}]"
    return str(t)


def _per_axis(value: Sequence[float] | float, ndim: int, what: str) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),) * ndim
    if len(value) != ndim:
        raise InputError(f"{what} needs {ndim} values (one per spatial axis)", value=list(value))
    return tuple(float(v) for v in value)


# ---------------------------------------------------------------------------- channels

_ChannelList = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
# The intensity normalisation blocks: they take ``channels`` (default: every channel).
NORMALISATION: tuple[str, ...] = ("ct_window", "zscore", "scale_range")


class OnChannels:
    """A MONAI array transform applied to some channels of the image, the others unchanged.

    ``channels`` index the first (channel) axis of ``image``. Another key in ``keys`` (the
    target image of image_to_image, one channel, normalised like the first input channel)
    gets the whole transform if ``channels`` holds 0, and is left as it is otherwise.
    """

    def __init__(self, inner: Any, keys: Sequence[str], channels: Sequence[int]) -> None:
        self.inner = inner
        self.keys = tuple(keys)
        self.channels = [int(c) for c in channels]

    def __call__(self, data: Any) -> Any:
        import numpy as np
        import torch

        d = dict(data)
        for key in self.keys:
            x = d[key]
            if key != "image":
                if 0 in self.channels:
                    d[key] = self.inner(x)
                continue
            if x.shape[0] <= max(self.channels):
                raise InputError(
                    f"channels {self.channels}: the image has {x.shape[0]} channel(s)",
                    value=self.channels,
                )
            part = self.inner(x[self.channels])
            if isinstance(x, torch.Tensor):
                t = x.clone() if x.is_floating_point() else x.float()
                t[self.channels] = torch.as_tensor(part, dtype=t.dtype)
                d[key] = t
            else:
                a = np.array(x, dtype=x.dtype if x.dtype.kind == "f" else np.float32)
                a[self.channels] = np.asarray(part, dtype=a.dtype)
                d[key] = a
        return d


def channel_problems(
    refs: Sequence[tuple[str, dict[str, Any]]],
    in_channels: int,
    count_field: str = "task.in_channels",
) -> list[tuple[int, str]]:
    """Problems of the normalisation blocks' ``channels`` among ``refs`` (block, params).

    ``count_field`` names where ``in_channels`` comes from in messages (a model manifest:
    the length of ``inputs.channels``).

    Each problem is (index in ``refs``, message): an index not below ``in_channels``, an
    index listed twice, or a channel that two normalisation blocks both normalise where at
    least one of them names its channels (two blocks without ``channels`` chain on every
    channel, as before ``channels`` existed). Parameters that do not validate are skipped
    (reported elsewhere).
    """
    problems: list[tuple[int, str]] = []
    owner: dict[int, int] = {}  # channel -> index of the block naming it
    every: list[int] = []  # blocks without channels
    for i, (name, params) in enumerate(refs):
        if name not in NORMALISATION:
            continue
        raw = params.get("channels") if isinstance(params, dict) else None
        if raw is None:
            every.append(i)
            continue
        try:
            valid = REGISTRY[name].params.model_validate(params)
            chans = [int(c) for c in getattr(valid, "channels", None) or []]
        except ValidationError:  # the parameter check reports it
            continue
        bad = sorted({c for c in chans if c >= in_channels})
        if bad:
            problems.append(
                (
                    i,
                    f"channels {chans}: index {bad[0]} is out of range; {count_field} is "
                    f"{in_channels} (valid indices 0..{in_channels - 1})",
                )
            )
        twice = sorted({c for c in chans if chans.count(c) > 1})
        if twice:
            problems.append((i, f"channels {chans}: channel {twice[0]} is listed twice"))
        for c in dict.fromkeys(chans):
            if c in owner:
                problems.append(
                    (
                        i,
                        f"channels {chans}: channel {c} is already normalised by "
                        f"entry {owner[c]} ({refs[owner[c]][0]}); each channel takes one "
                        "normalisation block",
                    )
                )
            else:
                owner[c] = i
    if owner:
        for i in every:
            problems.append(
                (
                    i,
                    f"{refs[i][0]} without channels normalises every channel, but "
                    f"channel(s) {sorted(owner)} already have their own normalisation "
                    "block; give this block its channels",
                )
            )
    return sorted(problems)


# ---------------------------------------------------------------------------- preprocessing


class OrientationParams(Params):
    axcodes: str = Field(
        "RAS", description="Target orientation codes, e.g. RAS or LPS (2D images: first 2)."
    )


def _orientation(p: OrientationParams, ctx: Context) -> Any:
    from monai.transforms import Orientationd

    return Orientationd(
        keys=ctx.keys,
        axcodes=p.axcodes[: ctx.spatial_dims],
        labels=(("L", "R"), ("P", "A"), ("I", "S")),
    )


class SpacingParams(Params):
    pixdim: list[float] = Field(..., description="Target voxel size in mm, one per spatial axis.")
    mode: Literal["bilinear", "nearest", "bicubic"] = Field(
        "bilinear", description="Interpolation of the image (label maps: always nearest)."
    )


def _spacing(p: SpacingParams, ctx: Context) -> Any:
    from monai.transforms import Spacingd

    pixdim = _per_axis(p.pixdim, ctx.spatial_dims, "spacing.pixdim")
    return Spacingd(keys=ctx.keys, pixdim=pixdim, mode=ctx.modes(p.mode))


class CTWindowParams(Params):
    a_min: float = Field(-1000.0, description="Lower window edge (HU).")
    a_max: float = Field(1000.0, description="Upper window edge (HU).")
    b_min: float = Field(0.0, description="Output value at the lower edge.")
    b_max: float = Field(1.0, description="Output value at the upper edge.")
    clip: bool = Field(True, description="Clip values outside the window.")
    channels: _ChannelList | None = Field(
        None,
        description="Channel indices (0-based) this block normalises; null: every channel. "
        "Lets a PET/CT recipe window the CT channel and scale the PET channel.",
    )


def _ct_window(p: CTWindowParams, ctx: Context) -> Any:
    from monai.transforms import ScaleIntensityRanged

    if p.a_max <= p.a_min:
        raise InputError("ct_window: a_max must be greater than a_min", value=[p.a_min, p.a_max])
    if p.channels is not None:
        from monai.transforms import ScaleIntensityRange

        inner = ScaleIntensityRange(p.a_min, p.a_max, p.b_min, p.b_max, clip=p.clip)
        return OnChannels(inner, ctx.intensity_keys, p.channels)
    return ScaleIntensityRanged(
        keys=ctx.intensity_keys,
        a_min=p.a_min,
        a_max=p.a_max,
        b_min=p.b_min,
        b_max=p.b_max,
        clip=p.clip,
    )


class ZScoreParams(Params):
    nonzero: bool = Field(
        True, description="Compute mean and std over non-zero voxels only (MR: skip background)."
    )
    channel_wise: bool = Field(True, description="Normalise each channel (MR sequence) alone.")
    channels: _ChannelList | None = Field(
        None,
        description="Channel indices (0-based) this block normalises; null: every channel. "
        "Lets a PET/CT recipe window the CT channel and scale the PET channel.",
    )


def _zscore(p: ZScoreParams, ctx: Context) -> Any:
    from monai.transforms import NormalizeIntensity, NormalizeIntensityd

    if p.channels is not None:
        inner = NormalizeIntensity(nonzero=p.nonzero, channel_wise=p.channel_wise)
        return OnChannels(inner, ctx.intensity_keys, p.channels)
    return NormalizeIntensityd(
        keys=ctx.intensity_keys, nonzero=p.nonzero, channel_wise=p.channel_wise
    )


class ScaleRangeParams(Params):
    minv: float = Field(0.0, description="Minimum of the output range.")
    maxv: float = Field(1.0, description="Maximum of the output range.")
    channels: _ChannelList | None = Field(
        None,
        description="Channel indices (0-based) this block normalises; null: every channel. "
        "Lets a PET/CT recipe window the CT channel and scale the PET channel.",
    )


def _scale_range(p: ScaleRangeParams, ctx: Context) -> Any:
    from monai.transforms import ScaleIntensity, ScaleIntensityd

    if p.channels is not None:
        inner = ScaleIntensity(minv=p.minv, maxv=p.maxv)
        return OnChannels(inner, ctx.intensity_keys, p.channels)
    return ScaleIntensityd(keys=ctx.intensity_keys, minv=p.minv, maxv=p.maxv)


class CropForegroundParams(Params):
    margin: int = Field(0, ge=0, description="Voxels kept around the foreground box.")
    threshold: float = Field(0.0, description="Image values above this count as foreground.")


def _crop_foreground(p: CropForegroundParams, ctx: Context) -> Any:
    from monai.transforms import CropForegroundd

    threshold = p.threshold
    return CropForegroundd(
        keys=ctx.keys,
        source_key="image",
        margin=p.margin,
        select_fn=lambda x: x > threshold,
        allow_smaller=True,
    )


class SpatialPadParams(Params):
    spatial_size: list[int] = Field(
        ..., description="Minimum size per spatial axis; smaller images are padded."
    )
    mode: Literal["constant", "edge", "reflect"] = Field("constant", description="Padding mode.")


def _spatial_pad(p: SpatialPadParams, ctx: Context) -> Any:
    from monai.transforms import SpatialPadd

    size = [int(v) for v in _per_axis(p.spatial_size, ctx.spatial_dims, "spatial_pad")]
    return SpatialPadd(keys=ctx.keys, spatial_size=size, mode=p.mode)


class RandCropByLabelParams(Params):
    pos: float = Field(1.0, ge=0, description="Relative weight of patches centred on foreground.")
    neg: float = Field(1.0, ge=0, description="Relative weight of patches centred on background.")


def _rand_crop_by_label(p: RandCropByLabelParams, ctx: Context) -> Any:
    from monai.transforms import RandCropByPosNegLabeld

    if len(ctx.patch_size) != ctx.spatial_dims:
        raise InputError(
            f"rand_crop_by_label needs trainer.patch_size with {ctx.spatial_dims} values",
            value=list(ctx.patch_size),
        )
    return RandCropByPosNegLabeld(
        keys=ctx.keys,
        label_key="label",
        spatial_size=list(ctx.patch_size),
        pos=p.pos,
        neg=p.neg,
        num_samples=1,
    )


# ---------------------------------------------------------------------------- augmentation


class FlipParams(Params):
    prob: float = Field(0.5, ge=0, le=1, description="Probability of flipping each listed axis.")
    spatial_axis: list[int] | None = Field(
        None, description="Axes to flip (0-based spatial axes); null = all axes."
    )


def _flip(p: FlipParams, ctx: Context) -> Any:
    from monai.transforms import Compose, RandFlipd

    axes = p.spatial_axis if p.spatial_axis is not None else list(range(ctx.spatial_dims))
    bad = [a for a in axes if not 0 <= a < ctx.spatial_dims]
    if bad:
        raise InputError(f"flip.spatial_axis must be in 0..{ctx.spatial_dims - 1}", value=bad)
    return Compose([RandFlipd(keys=ctx.keys, prob=p.prob, spatial_axis=a) for a in axes])


class Rotate90Params(Params):
    prob: float = Field(0.5, ge=0, le=1, description="Probability of rotating.")
    max_k: int = Field(3, ge=1, le=3, description="Rotate by k*90 degrees, k drawn in 1..max_k.")
    spatial_axes: tuple[int, int] = Field((0, 1), description="The plane to rotate in.")


def _rotate90(p: Rotate90Params, ctx: Context) -> Any:
    from monai.transforms import RandRotate90d

    return RandRotate90d(keys=ctx.keys, prob=p.prob, max_k=p.max_k, spatial_axes=p.spatial_axes)


class AffineParams(Params):
    prob: float = Field(0.5, ge=0, le=1, description="Probability of applying the transform.")
    rotate_range: float = Field(0.26, ge=0, description="Maximum rotation per axis (radians).")
    scale_range: float = Field(0.1, ge=0, description="Maximum relative scaling per axis.")
    translate_range: float = Field(0.0, ge=0, description="Maximum shift per axis (voxels).")
    mode: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="Interpolation of the image (label maps: always nearest)."
    )


def _affine(p: AffineParams, ctx: Context) -> Any:
    from monai.transforms import RandAffined

    n_rot = 1 if ctx.spatial_dims == 2 else 3
    return RandAffined(
        keys=ctx.keys,
        prob=p.prob,
        rotate_range=[p.rotate_range] * n_rot,
        scale_range=[p.scale_range] * ctx.spatial_dims,
        translate_range=[p.translate_range] * ctx.spatial_dims,
        mode=ctx.modes(p.mode),
        padding_mode="zeros",
    )


class ShiftIntensityParams(Params):
    prob: float = Field(0.5, ge=0, le=1, description="Probability of shifting.")
    offsets: float = Field(0.1, ge=0, description="Offset drawn uniformly in [-offsets, offsets].")


def _shift_intensity(p: ShiftIntensityParams, ctx: Context) -> Any:
    from monai.transforms import RandShiftIntensityd

    return RandShiftIntensityd(keys=ctx.image_keys, offsets=p.offsets, prob=p.prob)


class ScaleIntensityParams(Params):
    prob: float = Field(0.5, ge=0, le=1, description="Probability of scaling.")
    factors: float = Field(0.1, ge=0, description="Image is multiplied by 1 + f, f in ±factors.")


def _scale_intensity(p: ScaleIntensityParams, ctx: Context) -> Any:
    from monai.transforms import RandScaleIntensityd

    return RandScaleIntensityd(keys=ctx.image_keys, factors=p.factors, prob=p.prob)


class GaussianNoiseParams(Params):
    prob: float = Field(0.5, ge=0, le=1, description="Probability of adding noise.")
    mean: float = Field(0.0, description="Mean of the noise.")
    std: float = Field(0.1, ge=0, description="Standard deviation of the noise.")


def _gaussian_noise(p: GaussianNoiseParams, ctx: Context) -> Any:
    from monai.transforms import RandGaussianNoised

    return RandGaussianNoised(keys=ctx.image_keys, prob=p.prob, mean=p.mean, std=p.std)


# ---------------------------------------------------------------------------- networks


class UNetParams(Params):
    channels: list[int] = Field([16, 32, 64, 128], description="Feature maps per level.")
    strides: list[int] = Field(
        [2, 2, 2], description="Downsampling stride between levels (one fewer than channels)."
    )
    num_res_units: int = Field(2, ge=0, description="Residual units per level.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")


def _unet(p: UNetParams, ctx: Context) -> Any:
    from monai.networks.nets import UNet

    if len(p.strides) != len(p.channels) - 1:
        raise InputError(
            "unet.strides needs one value fewer than unet.channels",
            value={"channels": p.channels, "strides": p.strides},
        )
    return UNet(
        spatial_dims=ctx.spatial_dims,
        in_channels=ctx.in_channels,
        out_channels=ctx.out_channels,
        channels=p.channels,
        strides=p.strides,
        num_res_units=p.num_res_units,
        dropout=p.dropout,
    )


class BasicUNetParams(Params):
    features: list[int] = Field(
        [32, 32, 64, 128, 256, 32], description="Six feature counts: five encoder levels + output."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")


def _basic_unet(p: BasicUNetParams, ctx: Context) -> Any:
    from monai.networks.nets import BasicUNet

    if len(p.features) != 6:
        raise InputError("basic_unet.features needs exactly 6 values", value=p.features)
    return BasicUNet(
        spatial_dims=ctx.spatial_dims,
        in_channels=ctx.in_channels,
        out_channels=ctx.out_channels,
        features=tuple(p.features),
        dropout=p.dropout,
    )


class SegResNetParams(Params):
    init_filters: int = Field(8, ge=1, description="Feature maps of the first level.")
    blocks_down: list[int] = Field([1, 2, 2, 4], description="Residual blocks per encoder level.")
    blocks_up: list[int] = Field([1, 1, 1], description="Blocks per decoder level.")
    num_groups: int = Field(8, ge=1, description="Group-norm groups (must divide init_filters).")
    dropout: float | None = Field(None, description="Dropout probability (null: none).")


def _segresnet(p: SegResNetParams, ctx: Context) -> Any:
    from monai.networks.nets import SegResNet

    if len(p.blocks_up) != len(p.blocks_down) - 1:
        raise InputError(
            "segresnet.blocks_up needs one value fewer than blocks_down",
            value={"blocks_down": p.blocks_down, "blocks_up": p.blocks_up},
        )
    return SegResNet(
        spatial_dims=ctx.spatial_dims,
        init_filters=p.init_filters,
        in_channels=ctx.in_channels,
        out_channels=ctx.out_channels,
        dropout_prob=p.dropout,
        norm=("GROUP", {"num_groups": p.num_groups}),
        blocks_down=tuple(p.blocks_down),
        blocks_up=tuple(p.blocks_up),
    )


class DynUNetParams(Params):
    filters: list[int] = Field([16, 32, 64, 128], description="Feature maps per level.")
    strides: list[int] = Field(
        [1, 2, 2, 2], description="Stride per level (the first is usually 1)."
    )
    kernel_size: int = Field(3, description="Convolution kernel size (all levels).")
    res_block: bool = Field(False, description="Use residual blocks.")


def _dynunet(p: DynUNetParams, ctx: Context) -> Any:
    from monai.networks.nets import DynUNet

    if len(p.strides) != len(p.filters) or len(p.filters) < 3:
        raise InputError(
            "dynunet.strides needs one value per filter level, and at least 3 levels",
            value={"filters": p.filters, "strides": p.strides},
        )
    return DynUNet(
        spatial_dims=ctx.spatial_dims,
        in_channels=ctx.in_channels,
        out_channels=ctx.out_channels,
        kernel_size=[p.kernel_size] * len(p.filters),
        strides=p.strides,
        upsample_kernel_size=p.strides[1:],
        filters=p.filters,
        res_block=p.res_block,
    )


class DenseNetParams(Params):
    init_features: int = Field(64, ge=1, description="Feature maps after the stem.")
    growth_rate: int = Field(32, ge=1, description="Feature maps added by each dense layer.")
    block_config: list[int] = Field(
        [6, 12, 24, 16], description="Dense layers per block (DenseNet-121: 6, 12, 24, 16)."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")


def _densenet(p: DenseNetParams, ctx: Context) -> Any:
    from monai.networks.nets import DenseNet

    return DenseNet(
        spatial_dims=ctx.spatial_dims,
        in_channels=ctx.in_channels,
        out_channels=ctx.out_channels,
        init_features=p.init_features,
        growth_rate=p.growth_rate,
        block_config=tuple(p.block_config),
        dropout_prob=p.dropout,
    )


class ResNetParams(Params):
    block: Literal["basic", "bottleneck"] = Field("basic", description="Residual block type.")
    layers: list[int] = Field(
        [2, 2, 2, 2], description="Blocks per stage (ResNet-18: 2,2,2,2; ResNet-10: 1,1,1,1)."
    )
    block_inplanes: list[int] = Field(
        [64, 128, 256, 512], description="Feature maps per stage (one per entry of layers)."
    )


def _resnet(p: ResNetParams, ctx: Context) -> Any:
    from monai.networks.nets import ResNet

    if len(p.layers) != 4 or len(p.block_inplanes) != 4:
        raise InputError(
            "resnet.layers and resnet.block_inplanes need 4 values each (4 stages)",
            value={"layers": p.layers, "block_inplanes": p.block_inplanes},
        )
    return ResNet(
        block=p.block,
        layers=p.layers,
        block_inplanes=p.block_inplanes,
        spatial_dims=ctx.spatial_dims,
        n_input_channels=ctx.in_channels,
        num_classes=ctx.out_channels,
        conv1_t_size=3,
    )


# ---------------------------------------------------------------------------- losses
# Every loss takes (logits, target) in the trainer's target format: segmentation (B,1,...)
# class indices, classification (B,) class indices, multilabel (B,L) 0/1 floats,
# regression (B,T) floats, detection (B,1,...) target heatmap in [0, 1], image_to_image
# (B,C,...) target image.


class NoParams(Params):
    pass


class DiceParams(Params):
    include_background: bool = Field(True, description="Count the background class in Dice.")
    smooth: float = Field(1e-5, gt=0, description="Smoothing added to numerator and denominator.")


class DiceCEParams(DiceParams):
    lambda_dice: float = Field(1.0, ge=0, description="Weight of the Dice term.")
    lambda_ce: float = Field(1.0, ge=0, description="Weight of the cross-entropy term.")


def _dice_ce(p: DiceCEParams, ctx: Context) -> Any:
    from monai.losses import DiceCELoss

    return DiceCELoss(
        include_background=p.include_background,
        to_onehot_y=True,
        softmax=True,
        smooth_nr=p.smooth,
        smooth_dr=p.smooth,
        lambda_dice=p.lambda_dice,
        lambda_ce=p.lambda_ce,
    )


def _dice(p: DiceParams, ctx: Context) -> Any:
    from monai.losses import DiceLoss

    return DiceLoss(
        include_background=p.include_background,
        to_onehot_y=True,
        softmax=True,
        smooth_nr=p.smooth,
        smooth_dr=p.smooth,
    )


class CEParams(Params):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing.")


def _ce(p: CEParams, ctx: Context) -> Any:
    import torch

    ce = torch.nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)
    if not ctx.label_target:
        return ce

    def seg_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ce(logits, target[:, 0].long())

    return seg_ce


def _bce(p: NoParams, ctx: Context) -> Any:
    import torch

    bce = torch.nn.BCEWithLogitsLoss()
    if ctx.task == "multilabel":  # targets are already (B, L) 0/1 floats
        return bce

    def one_hot_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
        return bce(logits, onehot)

    return one_hot_bce


def _on_heatmap(loss: Any, ctx: Context) -> Any:
    """Detection: the network outputs logits; the loss compares their sigmoid with the target."""
    if ctx.task != "detection":
        return loss

    def heatmap_loss(logits: Any, target: Any) -> Any:
        return loss(logits.sigmoid(), target)

    return heatmap_loss


def _mse(p: NoParams, ctx: Context) -> Any:
    import torch

    return _on_heatmap(torch.nn.MSELoss(), ctx)


def _l1(p: NoParams, ctx: Context) -> Any:
    import torch

    return _on_heatmap(torch.nn.L1Loss(), ctx)


class WeightedMSEParams(Params):
    pos_weight: float = Field(
        10.0,
        ge=0,
        description="Extra weight of voxels near findings: each voxel's squared error is "
        "weighted 1 + pos_weight * target, so the few blob voxels are not outweighed.",
    )


def _weighted_mse(p: WeightedMSEParams, ctx: Context) -> Any:
    pos_weight = p.pos_weight

    def weighted_mse(logits: Any, target: Any) -> Any:
        err = (logits.sigmoid() - target) ** 2
        return (err * (1.0 + pos_weight * target)).mean()

    return weighted_mse


# ---------------------------------------------------------------------------- optimisers


class AdamParams(Params):
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (AdamW: decoupled decay).")


class SGDParams(Params):
    lr: float = Field(1e-2, gt=0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0).")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")


def _adam(p: AdamParams, ctx: Context) -> Any:
    import torch

    return lambda params: torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)


def _adamw(p: AdamParams, ctx: Context) -> Any:
    import torch

    return lambda params: torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)


def _sgd(p: SGDParams, ctx: Context) -> Any:
    import torch

    if p.nesterov and p.momentum == 0:
        raise InputError("sgd.nesterov needs momentum > 0", value=p.momentum)
    return lambda params: torch.optim.SGD(
        params, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov, weight_decay=p.weight_decay
    )


# ---------------------------------------------------------------------------- schedules
# A schedule steps once per epoch; its builder returns optimizer -> scheduler.


class CosineParams(Params):
    eta_min: float = Field(0.0, ge=0, description="Learning rate at the last epoch.")


class StepParams(Params):
    step_size: int = Field(30, ge=1, description="Epochs between decays.")
    gamma: float = Field(0.1, gt=0, description="Factor applied at each decay.")


def _cosine(p: CosineParams, ctx: Context) -> Any:
    import torch

    return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(ctx.epochs, 1), eta_min=p.eta_min
    )


def _step(p: StepParams, ctx: Context) -> Any:
    import torch

    return lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=p.step_size, gamma=p.gamma)


def _constant(p: NoParams, ctx: Context) -> Any:
    import torch

    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda _epoch: 1.0)


# ---------------------------------------------------------------------------- the registry

_SEG: tuple[str, ...] = ("segmentation",)
_MAP: tuple[str, ...] = MAP_TASKS
_SEG_LOSS: tuple[str, ...] = ("segmentation", "detection")  # detection: mode segmentation
# Detection losses by task.detection.mode (the recipe checks the pair)
DETECTION_LOSSES: dict[str, tuple[str, ...]] = {
    "heatmap": ("mse", "l1", "weighted_mse"),
    "segmentation": ("dice_ce", "dice", "ce"),
}
_CLS: tuple[str, ...] = ("classification", "multilabel")
_IMG_LEVEL: tuple[str, ...] = ("classification", "multilabel", "regression")

_BLOCKS: tuple[Block, ...] = (
    Block("orientation", "preprocess", "Reorient to axis codes", OrientationParams, _orientation),
    Block("spacing", "preprocess", "Resample to a voxel size (mm)", SpacingParams, _spacing),
    Block(
        "ct_window",
        "preprocess",
        "CT: clip to a HU window and scale linearly",
        CTWindowParams,
        _ct_window,
    ),
    Block(
        "zscore",
        "preprocess",
        "MR: z-score normalisation (per channel, non-zero voxels)",
        ZScoreParams,
        _zscore,
    ),
    Block(
        "scale_range",
        "preprocess",
        "Scale intensities min-max to a range (X-ray, photographs)",
        ScaleRangeParams,
        _scale_range,
    ),
    Block(
        "crop_foreground",
        "preprocess",
        "Crop to the box of image values above a threshold",
        CropForegroundParams,
        _crop_foreground,
    ),
    Block(
        "spatial_pad",
        "preprocess",
        "Pad each axis to at least a size",
        SpatialPadParams,
        _spatial_pad,
    ),
    Block(
        "rand_crop_by_label",
        "preprocess",
        "Each step, crop a trainer.patch_size patch centred on foreground or background",
        RandCropByLabelParams,
        _rand_crop_by_label,
        tasks=("segmentation", "detection"),
        random=True,
    ),
    Block("flip", "augment", "Random flips along axes", FlipParams, _flip, random=True),
    Block(
        "rotate90", "augment", "Random 90 degree rotations", Rotate90Params, _rotate90, random=True
    ),
    Block(
        "affine",
        "augment",
        "Random rotation, scaling and translation",
        AffineParams,
        _affine,
        random=True,
    ),
    Block(
        "shift_intensity",
        "augment",
        "Random intensity offset",
        ShiftIntensityParams,
        _shift_intensity,
        random=True,
    ),
    Block(
        "scale_intensity",
        "augment",
        "Random intensity scaling",
        ScaleIntensityParams,
        _scale_intensity,
        random=True,
    ),
    Block(
        "gaussian_noise",
        "augment",
        "Random additive Gaussian noise",
        GaussianNoiseParams,
        _gaussian_noise,
        random=True,
    ),
    Block("unet", "network", "MONAI UNet (residual units)", UNetParams, _unet, tasks=_MAP),
    Block("basic_unet", "network", "MONAI BasicUNet", BasicUNetParams, _basic_unet, tasks=_MAP),
    Block("segresnet", "network", "MONAI SegResNet", SegResNetParams, _segresnet, tasks=_MAP),
    Block("dynunet", "network", "MONAI DynUNet (nnU-Net style)", DynUNetParams, _dynunet, _MAP),
    Block(
        "densenet",
        "network",
        "MONAI DenseNet classifier / regressor (default: DenseNet-121)",
        DenseNetParams,
        _densenet,
        tasks=_IMG_LEVEL,
    ),
    Block(
        "resnet",
        "network",
        "MONAI ResNet classifier / regressor (default: ResNet-18)",
        ResNetParams,
        _resnet,
        tasks=_IMG_LEVEL,
    ),
    Block(
        "dice_ce",
        "loss",
        "Dice + cross-entropy (softmax)",
        DiceCEParams,
        _dice_ce,
        tasks=_SEG_LOSS,
    ),
    Block("dice", "loss", "Soft Dice (softmax)", DiceParams, _dice, tasks=_SEG_LOSS),
    Block(
        "ce",
        "loss",
        "Cross-entropy over classes",
        CEParams,
        _ce,
        tasks=("segmentation", "classification", "detection"),
    ),
    Block(
        "bce",
        "loss",
        "Binary cross-entropy per label (multi-class: one-hot)",
        NoParams,
        _bce,
        tasks=_CLS,
    ),
    Block(
        "mse",
        "loss",
        "Mean squared error (detection: of the heatmap's sigmoid)",
        NoParams,
        _mse,
        tasks=("regression", "detection", "image_to_image"),
    ),
    Block(
        "l1",
        "loss",
        "Mean absolute error (detection: of the heatmap's sigmoid)",
        NoParams,
        _l1,
        tasks=("regression", "detection", "image_to_image"),
    ),
    Block(
        "weighted_mse",
        "loss",
        "Heatmap MSE with voxels near findings weighted up (sigmoid of the output)",
        WeightedMSEParams,
        _weighted_mse,
        tasks=("detection",),
    ),
    Block("adam", "optimizer", "Adam", AdamParams, _adam),
    Block("adamw", "optimizer", "AdamW (decoupled weight decay)", AdamParams, _adamw),
    Block("sgd", "optimizer", "SGD with momentum", SGDParams, _sgd),
    Block("cosine", "schedule", "Cosine annealing over the epochs", CosineParams, _cosine),
    Block(
        "step", "schedule", "Multiply the rate by gamma every step_size epochs", StepParams, _step
    ),
    Block("none", "schedule", "Constant learning rate", NoParams, _constant),
)

REGISTRY: dict[str, Block] = {b.name: b for b in _BLOCKS}


def blocks(kind: str | None = None) -> list[Block]:
    """All blocks, or those of one kind, in registry order."""
    if kind is not None and kind not in KINDS:
        raise InputError(
            f"unknown block kind; choose one of {', '.join(KINDS)}",
            value=kind,
            hint=f"did you mean {guess!r}?" if (guess := nearest(kind, KINDS)) else None,
        )
    return [b for b in _BLOCKS if kind is None or b.kind == kind]


def nearest(name: str, names: Sequence[str]) -> str | None:
    """The valid name closest to ``name`` (difflib), or None if none is close."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.5)
    return close[0] if close else None
