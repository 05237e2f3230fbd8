"""Comparisons between memory signatures."""

from memsig.analysis.distance import (
    aligned_recall,
    bootstrap_distance,
    pairwise_distances,
    shared_lags,
    signature_distance,
)

__all__ = ["aligned_recall", "bootstrap_distance", "pairwise_distances", "shared_lags", "signature_distance"]
