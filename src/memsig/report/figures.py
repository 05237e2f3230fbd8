"""Interactive (plotly) versions of the signature figures, for the HTML report and W&B.

Every function returns a :class:`plotly.graph_objects.Figure` whose data are plain lists
(numbers rounded, NaN as null), so the values can be read in the page source. Colours follow
:mod:`memsig.plots.heatmaps`: recall in percent on a fixed 0–100 scale, white to dark purple
(matplotlib's ``Purples``), differences on a symmetric red–blue map (``RdBu_r``, red = the first
signature recalls better); cells without enough test support are left grey. The state-gradient
figures take any object with :class:`~memsig.analysis.state_gradients.GradientMemory`'s
attributes (``states``, ``lags``, ``symbols``, ``singular_values``, ``symbol_norm``, ``support``,
``decay``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import matplotlib
import numpy as np
import plotly.graph_objects as go
from matplotlib.colors import to_hex
from plotly.colors import DEFAULT_PLOTLY_COLORS, sample_colorscale
from plotly.subplots import make_subplots

from memsig.analysis.distance import aligned_recall
from memsig.probe.signature import CONTROL_PREFIXES, Signature

RECALL_CMAP = "Purples"  # memsig.plots.heatmaps: white (0 %) -> dark purple (100 %)
DIFFERENCE_CMAP = "RdBu_r"  # memsig.plots.heatmaps.difference_map: red = first better, blue = second
GRADIENT_CMAP = "viridis"  # state-gradient norms: another quantity, another map
MISSING = "rgb(230,230,230)"  # behind NaN cells (too little support), the grey of the static figures
TEMPLATE = "plotly_white"
ROW = 20  # pixels per heatmap row


class GradientLike(Protocol):
    """What the gradient figures read of a :class:`~memsig.analysis.state_gradients.GradientMemory`."""

    states: list[str]
    lags: list[int]
    symbols: list[str]
    singular_values: np.ndarray  # [S, K, R]
    symbol_norm: np.ndarray  # [S, K, C]
    support: np.ndarray  # [S, K, C]
    meta: dict[str, Any]

    def decay(self, k: int = 5) -> np.ndarray: ...  # [S, K]


def colorscale(name: str, n: int = 41) -> list[list[Any]]:
    """A plotly colour scale sampling matplotlib's colormap ``name`` at ``n`` points.

    ``n - 1 = 40`` is a multiple of the 8 and 10 segments of ColorBrewer's 9- and 11-colour maps
    (``Purples``, ``RdBu``), so every anchor colour is kept and the scales match exactly.
    """
    cmap = matplotlib.colormaps[name]
    return [[i / (n - 1), to_hex(cmap(i / (n - 1)))] for i in range(n)]


def cells(values: np.ndarray, decimals: int = 2) -> list[Any]:
    """``values`` (any shape) as nested lists of rounded floats, NaN as None (JSON null)."""
    if np.ndim(values) == 0:
        return None if not math.isfinite(float(values)) else round(float(values), decimals)
    return [cells(v, decimals) for v in values]


def _hover_text(
    state: str,
    lags: Sequence[int],
    symbols: Sequence[str],
    recall: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    support: np.ndarray,
    min_support: int,
) -> list[list[str]]:
    """``[K, C]`` hover lines of a recall heatmap (percent values)."""
    text = []
    for j, lag in enumerate(lags):
        row = []
        for c, symbol in enumerate(symbols):
            head = f"{state}<br>lag δ = {lag}, symbol '{symbol}'<br>"
            if math.isnan(recall[j, c]):
                row.append(f"{head}{support[j, c]} test positions (< {min_support}): no estimate")
            else:
                row.append(
                    f"{head}recall {recall[j, c]:.1f} % [{low[j, c]:.1f}, {high[j, c]:.1f}]"
                    f"<br>{support[j, c]} test positions"
                )
        text.append(row)
    return text


def _heatmap_axes(fig: go.Figure) -> None:
    """Categorical axes (every symbol and lag one cell), lag 1 at the top, grey behind NaN cells."""
    fig.update_xaxes(type="category", showgrid=False, tickangle=0)
    fig.update_yaxes(type="category", autorange="reversed", showgrid=False)
    fig.update_layout(template=TEMPLATE, plot_bgcolor=MISSING)


def _recall_axis() -> dict[str, Any]:
    """The shared colour axis of recall heatmaps: 0–100 %, white to dark purple."""
    return {
        "colorscale": colorscale(RECALL_CMAP),
        "cmin": 0,
        "cmax": 100,
        "colorbar": {"title": {"text": "recall (%)"}},
    }


def recall_trace(sig: Signature, state: str, **kwargs: Any) -> go.Heatmap:
    """The per-symbol recall ``[lags, symbols]`` of ``state`` in % as a heatmap trace (hover: interval, support)."""
    i = sig.index(state)
    low, high = (100 * x[i] for x in sig.recall_ci())
    recall = 100 * sig.recall[i]
    lags = [str(lag) for lag in sig.lags]
    return go.Heatmap(
        z=cells(recall),
        x=list(sig.symbols),
        y=lags,
        coloraxis="coloraxis",
        hoverinfo="text",
        text=_hover_text(state, sig.lags, sig.symbols, recall, low, high, sig.support[i], sig.min_support),
        **kwargs,
    )


def signature_heatmap(sig: Signature, state: str) -> go.Figure:
    """Recall of the input symbol at t−δ (x: symbol, y: lag δ) from ``state``, in %.

    Beside it the overall recall per lag ("all"); above it, when the signature has one, the
    model's own next-symbol accuracy per symbol ("forward").
    """
    i = sig.index(state)
    forward = sig.forward_recall
    rows = 1 if forward is None else 2
    k, c = len(sig.lags), len(sig.symbols)
    fig = make_subplots(
        rows=rows,
        cols=2,
        column_widths=[c, 1.5],
        row_heights=[1.2, k][-rows:],
        shared_yaxes=True,
        shared_xaxes=True,
        horizontal_spacing=0.01,
        vertical_spacing=0.02,
        specs=[[{}, {}]] if rows == 1 else [[{}, None], [{}, {}]],
    )
    fig.add_trace(recall_trace(sig, state, name=state), row=rows, col=1)
    accuracy = 100 * sig.accuracy[i]
    fig.add_trace(
        go.Heatmap(
            z=cells(accuracy[:, None]),
            x=["all"],
            y=[str(lag) for lag in sig.lags],
            coloraxis="coloraxis",
            texttemplate="%{z:.0f}",
            name="all symbols",
            hovertemplate="lag δ = %{y}<br>overall recall %{z:.1f} %<extra></extra>",
        ),
        row=rows,
        col=2,
    )
    if forward is not None:
        fig.add_trace(
            go.Heatmap(
                z=cells(100 * forward[None, :]),
                x=list(sig.symbols),
                y=["forward"],
                coloraxis="coloraxis",
                name="forward",
                hovertemplate="model's next-symbol accuracy on '%{x}': %{z:.1f} %<extra></extra>",
            ),
            row=1,
            col=1,
        )
    _heatmap_axes(fig)
    fig.update_layout(
        coloraxis=_recall_axis(),
        title={"text": state},
        height=140 + ROW * (k + 2 * (rows - 1)),
        margin={"t": 50, "b": 40},
    )
    fig.update_xaxes(title_text="input symbol at t−δ", row=rows, col=1)
    fig.update_yaxes(title_text="lag δ", row=rows, col=1)
    return fig


def marginal_curves(sigs: dict[str, Signature], real_only: bool = False) -> go.Figure:
    """Overall recall (%) per lag: a curve per (signature, state), majority-class rate dotted grey.

    Controls are drawn in their state's colour: ``random:`` dashed, ``shuffled:`` dash-dotted
    (left out with ``real_only``). Hover shows the 95 % interval (:meth:`~memsig.probe.signature.Signature.accuracy_ci`) and the test positions.
    """
    fig = go.Figure()
    colours: dict[tuple[str, str], str] = {}
    majorities: list[np.ndarray] = []
    for name, sig in sigs.items():
        prefix = f"{name}: " if len(sigs) > 1 else ""
        low, high = sig.accuracy_ci()
        for state in sig.real_states if real_only else sig.states:
            i = sig.index(state)
            base = state.split(":", 1)[1] if state.startswith(CONTROL_PREFIXES) else state
            colour = colours.setdefault((name, base), DEFAULT_PLOTLY_COLORS[len(colours) % len(DEFAULT_PLOTLY_COLORS)])
            dash = "solid" if base == state else "dash" if state.startswith("random:") else "dashdot"
            fig.add_trace(
                go.Scatter(
                    x=list(sig.lags),
                    y=cells(100 * sig.accuracy[i]),
                    mode="lines+markers",
                    name=prefix + state,
                    line={"color": colour, "dash": dash},
                    customdata=[
                        list(x) for x in zip(cells(100 * low[i]), cells(100 * high[i]), sig.support[i].sum(-1).tolist())
                    ],
                    hovertemplate=f"{prefix}{state}<br>lag δ = %{{x}}: %{{y:.1f}} % [%{{customdata[0]:.1f}}, "
                    "%{customdata[1]:.1f}]<br>%{customdata[2]} test positions<extra></extra>",
                )
            )
        rate = 100 * sig.majority_rate[0]
        if not any(len(m) == len(rate) and np.allclose(m, rate, atol=0.05) for m in majorities):  # one line per rate
            majorities.append(rate)
            fig.add_trace(
                go.Scatter(
                    x=list(sig.lags),
                    y=cells(rate),
                    mode="lines",
                    name=f"{prefix}majority class",
                    line={"color": "grey", "dash": "dot"},
                    legendgroup="majority",
                    hovertemplate="majority class, lag δ = %{x}: %{y:.1f} %<extra></extra>",
                )
            )
    if len(majorities) == 1:  # shared by every signature
        fig.update_traces(name="majority class", selector={"legendgroup": "majority"})
    fig.update_layout(
        template=TEMPLATE,
        height=420,
        xaxis_title="lag δ",
        yaxis_title="recall (%)",
        yaxis_range=[0, 100],
        legend={"font": {"size": 11}},
        margin={"t": 30},
    )
    return fig


def side_by_side(sigs: dict[str, Signature], states: dict[str, str], cols: int = 2) -> go.Figure:
    """One recall heatmap per signature (``states``: the state shown of each), one shared 0–100 % scale."""
    cols = min(cols, len(sigs))
    rows = math.ceil(len(sigs) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"{name} — {states[name]}" for name in sigs],
        horizontal_spacing=0.06,
        vertical_spacing=0.3 / rows,
    )
    for j, (name, sig) in enumerate(sigs.items()):
        fig.add_trace(recall_trace(sig, states[name], name=name), row=j // cols + 1, col=j % cols + 1)
    _heatmap_axes(fig)
    k = max(len(sig.lags) for sig in sigs.values())
    fig.update_layout(coloraxis=_recall_axis(), height=rows * (110 + ROW * k), margin={"t": 60})
    return fig


def difference_maps(sigs: dict[str, Signature], states: dict[str, str], pairs: Sequence[tuple[str, str]]) -> go.Figure:
    """Recall of a minus b in points for each pair ``(a, b)``, one at a time (a menu picks the pair).

    Each map has its own symmetric scale; cells NaN in either signature are grey.
    """
    fig = go.Figure()
    titles = []
    for a, b in pairs:
        lags, symbols, ra, rb = aligned_recall(sigs[a], sigs[b], states[a], states[b], same_symbols=False)
        diff = 100 * (ra - rb)
        vmax = max(float(np.nanmax(np.abs(diff), initial=0.0)), 1.0)
        custom = np.stack([100 * ra, 100 * rb], -1)
        fig.add_trace(
            go.Heatmap(
                z=cells(diff),
                x=symbols,
                y=[str(lag) for lag in lags],
                zmid=0,
                zmin=-vmax,
                zmax=vmax,
                colorscale=colorscale(DIFFERENCE_CMAP),
                customdata=cells(custom),
                visible=not titles,
                name=f"{a} − {b}",
                colorbar={"title": {"text": "Δ recall (points)"}},
                hovertemplate=f"lag δ = %{{y}}, symbol '%{{x}}'<br>{a}: %{{customdata[0]:.1f}} %<br>{b}: "
                f"%{{customdata[1]:.1f}} %<br>difference %{{z:+.1f}} points<extra></extra>",
            )
        )
        titles.append(f"{a} ({states[a]}) − {b} ({states[b]}): red = {a} recalls better, blue = {b}")
    _heatmap_axes(fig)
    k = max(len(sig.lags) for sig in sigs.values())
    menu = len(pairs) > 1
    fig.update_layout(
        title={"text": titles[0], "font": {"size": 13}, "x": 0.01, "y": 0.98, "yref": "container", "yanchor": "top"},
        height=170 + (40 if menu else 0) + ROW * k,
        xaxis_title="input symbol at t−δ",
        yaxis_title="lag δ",
        margin={"t": 100 if menu else 60},
    )
    if menu:  # below the title, above the map
        buttons = [
            {
                "label": f"{a} − {b}",
                "method": "update",
                "args": [{"visible": [j == i for j in range(len(pairs))]}, {"title.text": titles[i]}],
            }
            for i, (a, b) in enumerate(pairs)
        ]
        fig.update_layout(updatemenus=[{"buttons": buttons, "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}])
    return fig


def gradient_decay(grad: GradientLike, k: int = 5) -> go.Figure:
    """Sum of the top-``k`` singular values of the position-averaged whitened Jacobian per lag (log scale)."""
    fig = go.Figure()
    decay = grad.decay(k)
    for i, state in enumerate(grad.states):
        fig.add_trace(
            go.Scatter(
                x=list(grad.lags),
                y=cells(decay[i], 6),
                mode="lines+markers",
                name=state,
                hovertemplate=f"{state}<br>lag δ = %{{x}}: %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        xaxis_title="lag δ",
        yaxis_type="log",
        yaxis_title=f"sum of top-{k} singular values",
        margin={"t": 30},
    )
    return fig


def singular_spectra(grad: GradientLike) -> go.Figure:
    """Singular values (descending) of the whitened Jacobian, one curve per lag, one panel per state."""
    s = len(grad.states)
    fig = make_subplots(rows=1, cols=s, subplot_titles=grad.states, shared_yaxes=True, horizontal_spacing=0.04)
    colours = sample_colorscale("Viridis", [j / max(len(grad.lags) - 1, 1) for j in range(len(grad.lags))])
    rank = np.arange(1, grad.singular_values.shape[-1] + 1).tolist()
    for i, state in enumerate(grad.states):
        for j, lag in enumerate(grad.lags):
            fig.add_trace(
                go.Scatter(
                    x=rank,
                    y=cells(grad.singular_values[i, j], 6),
                    mode="lines",
                    line={"color": colours[j], "width": 1.5},
                    name=f"δ = {lag}",
                    legendgroup=str(lag),
                    showlegend=i == 0,
                    hovertemplate=f"{state}, lag δ = {lag}<br>σ%{{x}} = %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=i + 1,
            )
        fig.update_xaxes(title_text="rank", row=1, col=i + 1)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="singular value", row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=380, margin={"t": 40})
    return fig


def gradient_map(grad: GradientLike, state: str) -> go.Figure:
    """Mean whitened Jacobian norm per symbol at t−δ (x: symbol, y: lag), coloured on a log10 scale."""
    i = grad.states.index(state)
    norm = grad.symbol_norm[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norm = np.where(norm > 0, np.log10(norm), np.nan)
    fig = go.Figure(
        go.Heatmap(
            z=cells(log_norm, 3),
            x=list(grad.symbols),
            y=[str(lag) for lag in grad.lags],
            customdata=cells(norm, 6),
            colorscale=colorscale(GRADIENT_CMAP),
            colorbar={"title": {"text": "log10 ‖J‖"}},
            name=state,
            text=grad.support[i].tolist(),
            hovertemplate=f"{state}<br>lag δ = %{{y}}, symbol '%{{x}}'<br>‖J‖ = %{{customdata:.4g}}"
            "<br>%{text} positions<extra></extra>",
        )
    )
    _heatmap_axes(fig)
    fig.update_layout(
        title={"text": state},
        height=140 + ROW * len(grad.lags),
        xaxis_title="input symbol at t−δ",
        yaxis_title="lag δ",
        margin={"t": 50},
    )
    return fig
