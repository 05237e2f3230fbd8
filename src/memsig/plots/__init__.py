"""Figures of memory signatures (matplotlib Figures, no pyplot state)."""

from memsig.plots.gradients import gradient_figure
from memsig.plots.heatmaps import (
    confusion_plot,
    departure_bars,
    difference_map,
    marginal_curves,
    memory_and_inference,
    save_figure,
    side_by_side,
    signature_heatmap,
)

__all__ = [
    "confusion_plot",
    "departure_bars",
    "difference_map",
    "gradient_figure",
    "marginal_curves",
    "memory_and_inference",
    "save_figure",
    "side_by_side",
    "signature_heatmap",
]
