"""The test dataset of the browser tests: case ids, shapes and reference labels."""

from __future__ import annotations

import numpy as np

N_CASES = 10
SHAPE = (6, 5, 4)
PASSWORD = "correct horse battery"


def label_of(case_key: str) -> np.ndarray:
    """The reference label map of a case ``caseNN`` (known to the tests only)."""
    i = int(case_key.removeprefix("case"))
    lab = np.zeros(SHAPE, np.uint8)
    lab[1 : 3 + i % 3, 1:4, 1:3] = 1
    return lab
