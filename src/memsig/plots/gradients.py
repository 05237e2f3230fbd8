"""State-gradient figures (:class:`~memsig.analysis.state_gradients.GradientMemory`), matplotlib
without pyplot like :mod:`memsig.plots.static`: one figure per state with the singular-value
spectra per lag, the memory-decay curve, and the per-symbol gradient map laid out like a
signature (symbols × lag, lag 1 at the top; hatched grey = too few positions)."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from memsig.analysis.state_gradients import GradientMemory
from memsig.plots.specs import RECALL_CMAP, Heatmap, Scale
from memsig.plots.static import CELL, _grid, _label


def gradient_figure(grad: GradientMemory, state: str, top: int = 5) -> Figure:
    """Spectra per lag (left), decay of the top-``top`` singular-value sum and of the mean norm
    (middle), per-symbol mean whitened Jacobian norm ``[lags, symbols]`` (right)."""
    i = grad.index(state)
    k, c = len(grad.lags), len(grad.symbols)
    fig = Figure(figsize=(9 + CELL * c, 1.8 + CELL * k), layout="constrained")
    spectra, decay, sym = fig.subplots(1, 3, width_ratios=[3, 3, CELL * c])
    cmap = matplotlib.colormaps["viridis"]
    for j, lag in enumerate(grad.lags):
        sv = grad.singular_values[i, j]
        sv = sv[np.isfinite(sv)]
        spectra.semilogy(
            np.arange(1, len(sv) + 1),
            np.maximum(sv, 1e-12),
            color=cmap(j / max(k - 1, 1)),
            label=f"δ={lag}" if j in (0, k - 1) or k <= 6 else None,
        )
    spectra.set(xlabel="singular value index", ylabel="singular value (whitened)", title="spectrum per lag")
    spectra.legend(fontsize=7)
    decay.semilogy(grad.lags, np.maximum(grad.decay(top)[i], 1e-12), "o-", label=f"sum of top {top} singular values")
    decay.semilogy(grad.lags, np.maximum(grad.norm[i], 1e-12), "s--", label="mean ‖J·Wh‖_F")
    decay.set(xlabel="lag δ", ylabel="gradient memory", title="memory decay")
    decay.legend(fontsize=7)
    values = grad.symbol_norm[i]
    top_value = np.nanmax(values) if np.isfinite(values).any() else 1.0
    scale = Scale(RECALL_CMAP, 0.0, float(top_value), "")
    image = _grid(sym, values, scale)
    _label(sym, Heatmap(values, list(grad.symbols), [str(lag) for lag in grad.lags], scale))
    sym.set_title("mean ‖J·Wh‖_F per symbol at t−δ")
    fig.colorbar(image, ax=sym, shrink=0.8)
    fig.suptitle(f"state gradients: {state} ({grad.meta.get('positions', '?')} positions)")
    return fig
