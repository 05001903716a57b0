"""Recipe texts shared by the lab tests (tiny networks, a few steps)."""

from __future__ import annotations

SEG2D = """\
name: disks-unet
dataset: {name: disks2d, split: default}
task: {type: segmentation, spatial_dims: 2, num_classes: 2}
preprocess:
  - block: zscore
  - block: rand_crop_by_label
augment:
  - block: flip
  - block: gaussian_noise
    params: {std: 0.05}
network:
  block: unet
  params: {channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}
loss: {block: dice_ce}
optimizer: {block: adam, params: {lr: 0.01}}
schedule: {block: cosine}
trainer: {epochs: EPOCHS, batch_size: 2, patch_size: [16, 16], seed: 1}
"""

SEG3D = """\
name: balls-segresnet
dataset: {name: balls3d, split: default}
task: {type: segmentation, spatial_dims: 3, num_classes: 2}
preprocess:
  - block: orientation
  - block: spacing
    params: {pixdim: [1.0, 1.0, 1.0]}
  - block: scale_range
augment:
  - block: rotate90
  - block: shift_intensity
network:
  block: segresnet
  params: {init_filters: 4, num_groups: 2, blocks_down: [1, 1], blocks_up: [1]}
loss: {block: dice}
optimizer: {block: sgd, params: {lr: 0.05}}
schedule: {block: step, params: {step_size: 1, gamma: 0.5}}
trainer:
  epochs: 2
  batch_size: 2
  patch_size: [16, 16, 16]
  sliding_window: {overlap: 0.5}
"""

CLS2D = """\
name: disks-resnet
dataset: {name: disks2d, split: default, target: bright}
task: {type: classification, spatial_dims: 2, num_classes: 2}
preprocess:
  - block: scale_range
augment:
  - block: affine
    params: {prob: 0.5, rotate_range: 0.2}
  - block: scale_intensity
network:
  block: resnet
  params: {layers: [1, 1, 1, 1], block_inplanes: [4, 8, 8, 8]}
loss: {block: ce}
optimizer: {block: adamw, params: {lr: 0.01}}
trainer: {epochs: 2, batch_size: 3, patch_size: [24, 24]}
"""

ML2D = """\
name: disks-multilabel
dataset: {name: disks2d, split: default, targets: [is_bright, is_big]}
task: {type: multilabel, spatial_dims: 2}
preprocess:
  - block: scale_range
augment:
  - block: flip
network:
  block: densenet
  params: {init_features: 4, growth_rate: 4, block_config: [1, 1]}
loss: {block: bce}
trainer: {epochs: 2, batch_size: 3, patch_size: [24, 24]}
"""

REG2D = """\
name: disks-densenet
dataset: {name: disks2d, split: default, target: radius}
task: {type: regression, spatial_dims: 2}
preprocess:
  - block: zscore
network:
  block: densenet
  params: {init_features: 4, growth_rate: 4, block_config: [1, 1]}
loss: {block: l1}
optimizer: {block: adam, params: {lr: 0.01}}
trainer: {epochs: 2, batch_size: 3, patch_size: [32, 32]}
"""


def seg2d(epochs: int = 2) -> str:
    return SEG2D.replace("EPOCHS", str(epochs))


DET3D = """\
name: balls-detector
dataset: {name: nodules3d, split: default}
task:
  type: detection
  spatial_dims: 3
  detection: {sigma_scale: 0.5, threshold: 0.05, min_distance_mm: 4.0, max_candidates: 10}
preprocess:
  - block: orientation
  - block: spacing
    params: {pixdim: [1.5, 1.5, 1.5]}
  - block: zscore
  - block: rand_crop_by_label
augment:
  - block: flip
network:
  block: unet
  params: {channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}
loss: {block: weighted_mse}
optimizer: {block: adam, params: {lr: 0.01}}
trainer: {epochs: 2, batch_size: 2, patch_size: [12, 12, 12], seed: 3}
"""

I2I2D = """\
name: disks-denoiser
dataset: {name: denoise2d, split: default}
task:
  type: image_to_image
  spatial_dims: 2
  image_to_image: {data_range: 1.0, residual: true}
preprocess:
  - block: ct_window
    params: {a_min: 0, a_max: 255}
augment:
  - block: flip
network:
  block: unet
  params: {channels: [8, 16, 32], strides: [2, 2], num_res_units: 1}
loss: {block: l1}
optimizer: {block: adam, params: {lr: 0.01}}
trainer:
  epochs: EPOCHS
  batch_size: 2
  patch_size: [16, 16]
  seed: 4
  val_every: EPOCHS  # validate and checkpoint at the end only
  checkpoint_every: EPOCHS
"""


def i2i2d(epochs: int = 2) -> str:
    return I2I2D.replace("EPOCHS", str(epochs))


# detection through segmentation: sphere masks, two classes, candidates at components
DET3D_SEG = (
    DET3D.replace("name: balls-detector", "name: balls-detector-seg")
    .replace("detection: {sigma_scale: 0.5,", "detection: {mode: segmentation,")
    .replace("loss: {block: weighted_mse}", "loss: {block: dice_ce}")
)

DET2D = """\
name: disks-detector
dataset: {name: nodules2d, split: default}
task:
  type: detection
  spatial_dims: 2
  detection: {threshold: 0.05, min_distance_mm: 4.0, max_candidates: 10}
preprocess:
  - block: spacing
    params: {pixdim: [1.0, 1.0]}
  - block: zscore
  - block: rand_crop_by_label
network:
  block: unet
  params: {channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}
loss: {block: mse}
optimizer: {block: adam, params: {lr: 0.01}}
trainer: {epochs: 2, batch_size: 2, patch_size: [16, 16], seed: 5}
"""
