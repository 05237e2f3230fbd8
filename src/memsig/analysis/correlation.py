"""Rank correlation (SciPy is not a dependency)."""

from __future__ import annotations

import numpy as np


def ranks(x: np.ndarray) -> np.ndarray:
    """``[N]`` 1-based ranks of ``x``, ties given their average rank."""
    order = np.empty(len(x))
    order[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, inv = np.unique(x, return_inverse=True)
    return (np.bincount(inv, order) / np.bincount(inv))[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ of two ``[N]`` arrays: Pearson correlation of tie-averaged ranks (NaN if
    fewer than 3 pairs or one side is constant)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])
