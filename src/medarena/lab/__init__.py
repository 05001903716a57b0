"""The open lab: training recipes assembled from registered blocks, a trainer, ONNX export.

Api: ``blocks`` / ``REGISTRY`` (the block registry), ``parse_recipe`` / ``load_recipe``
(YAML -> Recipe, errors by line), ``train`` (recipe -> trained, checkpointed, exported
model in a run folder). torch and MONAI are imported when a block is built, not here.
"""

from medarena.lab.blocks import REGISTRY, Block, blocks
from medarena.lab.recipe import Recipe, RecipeError, load_recipe, parse_recipe

__all__ = ["REGISTRY", "Block", "Recipe", "RecipeError", "blocks", "load_recipe", "parse_recipe"]
