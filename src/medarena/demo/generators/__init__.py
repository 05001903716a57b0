"""Deterministic demo-data generators, one module per track.

Each module has ``generate(out_dir, *, n_train, n_test, seed, size) -> GeneratedTrack``;
see docs/demo-data.md for each generator's model and limits.
"""
