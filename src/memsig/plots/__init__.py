"""Figures of memory signatures.

:mod:`memsig.plots.specs` computes what each figure shows (renderer-neutral specifications);
:mod:`memsig.plots.static` draws them with matplotlib (Figures without pyplot state, saved as
PNG/SVG; the functions re-exported here) and :mod:`memsig.plots.interactive` with plotly (the
HTML report, imported on its own: it loads plotly).
"""

from memsig.plots.gradients import gradient_figure
from memsig.plots.static import (
    conditional_memory,
    confusion_plot,
    departure_bars,
    difference_map,
    marginal_curves,
    memory_and_inference,
    save_figure,
    side_by_side,
    signature_heatmap,
    to_matplotlib,
)

__all__ = [
    "conditional_memory",
    "confusion_plot",
    "departure_bars",
    "difference_map",
    "gradient_figure",
    "marginal_curves",
    "memory_and_inference",
    "save_figure",
    "side_by_side",
    "signature_heatmap",
    "to_matplotlib",
]
