"""Comparisons between memory signatures."""

from memsig.analysis.distance import aligned_recall, bootstrap_distance, pairwise_distances, signature_distance

__all__ = ["aligned_recall", "bootstrap_distance", "pairwise_distances", "signature_distance"]
