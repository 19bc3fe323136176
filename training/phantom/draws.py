"""Small random-draw helpers shared by the phantom modules."""
from __future__ import annotations

import numpy as np


def clip(v: float, lo: float, hi: float) -> float:
    """``v`` limited to [lo, hi], as a Python float."""
    return float(min(max(v, lo), hi))


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed direction: a unit 3-vector drawn from ``rng`` (three normal draws)."""
    v = rng.normal(size=3)
    return v / (np.linalg.norm(v) + 1e-9)
