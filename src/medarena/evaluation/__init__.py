"""Evaluation engine: metrics as pure functions over arrays, following published definitions.

A pure library (numpy, scipy, scikit-learn, scikit-image); no database, no torch at import.
Import the submodule you need, e.g. ``from medarena.evaluation import classification``.
"""
