"""Memory-signature figures as plotly Figures, for the HTML report and W&B.

:func:`to_plotly` draws a figure specification of :mod:`memsig.plots.specs`, the same one
:mod:`memsig.plots.static` draws with matplotlib, so both show the same numbers, labels, titles
and colours: recall in percent on a fixed 0–100 scale, white to dark purple (matplotlib's
``Purples``), differences on a symmetric red–blue map (``RdBu_r``); cells without enough test
support are left grey. Notes are left to the page's captions. Every figure's data are plain lists
(numbers rounded, NaN as null), so the values can be read in the page source.

The state-gradient figures take any object with
:class:`~memsig.analysis.state_gradients.GradientMemory`'s attributes (:class:`GradientLike`).
"""

from __future__ import annotations

import math
from functools import singledispatch
from typing import Any, Protocol

import matplotlib
import numpy as np
import plotly.graph_objects as go
from matplotlib.colors import to_hex
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from memsig.plots.specs import GRADIENT_CMAP, PALETTE, Curves, Heatmap, Panels, Points, Scale, SignatureMap

MISSING = "rgb(230,230,230)"  # behind NaN cells (too little support), the grey of the static figures
TEMPLATE = "plotly_white"
ROW = 20  # pixels per heatmap row
DASH = {"solid": "solid", "dash": "dash", "dashdot": "dashdot", "dot": "dot"}


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


def _html(text: str) -> str:
    return text.replace("\n", "<br>")


def _axis(scale: Scale, x: float | None = None) -> dict[str, Any]:
    """A colour axis of ``scale``."""
    bar: dict[str, Any] = {"title": {"text": scale.label}}
    if x is not None:
        bar["x"] = x
    return {"colorscale": colorscale(scale.cmap), "cmin": scale.vmin, "cmax": scale.vmax, "colorbar": bar}


def _trace(spec: Heatmap, coloraxis: str | None = None, **kwargs: Any) -> go.Heatmap:
    """A heatmap spec as a trace: on the shared ``coloraxis`` or on its own scale and colourbar."""
    if coloraxis is None:
        s = spec.scale
        kwargs.update(colorscale=colorscale(s.cmap), zmin=s.vmin, zmax=s.vmax, colorbar={"title": {"text": s.label}})
        if s.vmin == -s.vmax:
            kwargs["zmid"] = 0
    else:
        kwargs["coloraxis"] = coloraxis
    if spec.hover is not None:
        kwargs.update(hoverinfo="text", text=[[_html(t) for t in row] for row in spec.hover])
    if spec.labelled:
        kwargs["texttemplate"] = "%{z:.0f}"
    return go.Heatmap(
        z=cells(spec.values, spec.scale.decimals), x=list(spec.x), y=list(spec.y), name=spec.name, **kwargs
    )


def _heatmap_axes(fig: go.Figure) -> None:
    """Categorical axes (every symbol and lag one cell), lag 1 at the top, grey behind NaN cells."""
    fig.update_xaxes(type="category", showgrid=False, tickangle=0)
    fig.update_yaxes(type="category", autorange="reversed", showgrid=False)
    fig.update_layout(template=TEMPLATE, plot_bgcolor=MISSING)


@singledispatch
def to_plotly(spec: object) -> go.Figure:
    """The plotly Figure of a :mod:`memsig.plots.specs` figure specification."""
    raise TypeError(f"no plotly drawing of {type(spec).__name__}")


@to_plotly.register
def _plot_heatmap(spec: Heatmap) -> go.Figure:
    fig = go.Figure(_trace(spec))
    _heatmap_axes(fig)
    fig.update_layout(
        title={"text": " — ".join(spec.title), "font": {"size": 13}},
        height=150 + ROW * len(spec.y),
        xaxis_title=spec.xlabel,
        yaxis_title=spec.ylabel,
        margin={"t": 50},
    )
    return fig


@to_plotly.register
def _plot_signature_map(spec: SignatureMap) -> go.Figure:
    rows = 1 if spec.forward is None else 2
    k, c = spec.recall.values.shape
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
    fig.add_trace(_trace(spec.recall, "coloraxis"), row=rows, col=1)
    fig.add_trace(_trace(spec.overall, "coloraxis"), row=rows, col=2)
    if spec.forward is not None:
        fig.add_trace(_trace(spec.forward, "coloraxis"), row=1, col=1)
    _heatmap_axes(fig)
    fig.update_layout(
        coloraxis=_axis(spec.recall.scale),
        title={"text": spec.title},
        height=140 + ROW * (k + 2 * (rows - 1)),
        margin={"t": 50, "b": 40},
    )
    fig.update_xaxes(title_text=spec.recall.xlabel, row=rows, col=1)
    fig.update_yaxes(title_text=spec.recall.ylabel, row=rows, col=1)
    return fig


@to_plotly.register
def _plot_panels(spec: Panels, cols: int = 2) -> go.Figure:
    cols = min(cols, len(spec.panels))
    rows = math.ceil(len(spec.panels) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[" — ".join(p.title) for p in spec.panels],
        horizontal_spacing=0.06,
        vertical_spacing=0.3 / rows,
    )
    axes: dict[Scale, str] = {}
    for j, panel in enumerate(spec.panels):
        axis = axes.setdefault(panel.scale, "coloraxis" + (str(len(axes) + 1) if axes else ""))
        fig.add_trace(_trace(panel, axis), row=j // cols + 1, col=j % cols + 1)
    _heatmap_axes(fig)
    k = max(len(p.y) for p in spec.panels)
    fig.update_layout(
        {name: _axis(scale, None if j == 0 else 1.02 + 0.12 * j) for j, (scale, name) in enumerate(axes.items())},
        height=rows * (110 + ROW * k),
        margin={"t": 60},
    )
    return fig


@to_plotly.register
def _plot_curves(spec: Curves) -> go.Figure:
    fig = go.Figure()
    for curve in spec.curves:
        group = curve.group or (curve.name if curve.band else None)  # a band hides with its curve
        if curve.band and curve.low is not None:  # the interval as a band: its upper edge, then filled down
            for edge, fill in ((curve.high, "none"), (curve.low, "tonexty")):
                fig.add_trace(
                    go.Scatter(
                        x=list(curve.x),
                        y=cells(edge, spec.decimals),
                        mode="lines",
                        line={"width": 0, "color": curve.colour},
                        fill=fill,
                        fillcolor=_transparent(curve.colour),
                        legendgroup=group,
                        showlegend=False,
                        hoverinfo="skip",
                        name=f"{curve.name} interval",
                    )
                )
        fig.add_trace(
            go.Scatter(
                x=list(curve.x),
                y=cells(curve.y, spec.decimals),
                mode="lines+markers" if curve.markers else "lines",
                name=curve.name,
                line={"color": curve.colour, "dash": DASH[curve.dash]},
                legendgroup=group,
                hoverinfo="text" if curve.hover else None,
                hovertext=[_html(t) for t in curve.hover] if curve.hover else None,
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        height=420,
        xaxis_title=spec.xlabel,
        yaxis_title=spec.ylabel,
        legend={"font": {"size": 11}},
        margin={"t": 30},
    )
    if spec.yrange is not None:
        fig.update_layout(yaxis_range=list(spec.yrange))
    if spec.zero_line:
        fig.add_hline(y=0, line={"color": "grey", "width": 1})
    return fig


@to_plotly.register
def _plot_points(spec: Points) -> go.Figure:
    fig = go.Figure()
    for i, name in enumerate(spec.names):
        x, y, low, high = (float(v[i]) for v in (spec.x, spec.y, spec.low, spec.high))
        interval = math.isfinite(low)
        fig.add_trace(
            go.Scatter(
                x=[round(x, 3)],
                y=[round(y, 3)],
                mode="markers+text",
                text=[name],
                textposition="top right",
                name=name,
                marker={"color": PALETTE[i % len(PALETTE)], "size": 9},
                error_y={"type": "data", "symmetric": False, "array": [high - y], "arrayminus": [y - low]}
                if interval
                else None,
                hovertext=f"{name}: perplexity {x:.3f}, {y:.3f} bits"
                + (f" [{low:.3f}, {high:.3f}]" if interval else ""),
                hoverinfo="text",
            )
        )
    fig.update_layout(template=TEMPLATE, height=420, xaxis_title=spec.xlabel, yaxis_title=spec.ylabel, margin={"t": 30})
    return fig


def _transparent(colour: str, alpha: float = 0.2) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def difference_menu(maps: list[Heatmap]) -> go.Figure:
    """Difference maps (:func:`memsig.plots.specs.difference`), one at a time: a menu picks the pair
    when there are several. Each keeps its own symmetric scale; cells NaN in either signature are grey."""
    fig = go.Figure()
    titles = [" — ".join(m.title) for m in maps]
    for j, spec in enumerate(maps):
        fig.add_trace(_trace(spec, visible=j == 0))
    _heatmap_axes(fig)
    k = max(len(m.y) for m in maps)
    menu = len(maps) > 1
    fig.update_layout(
        title={"text": titles[0], "font": {"size": 13}, "x": 0.01, "y": 0.98, "yref": "container", "yanchor": "top"},
        height=170 + (40 if menu else 0) + ROW * k,
        xaxis_title=maps[0].xlabel,
        yaxis_title=maps[0].ylabel,
        margin={"t": 100 if menu else 60},
    )
    if menu:  # below the title, above the map
        buttons = [
            {
                "label": spec.name,
                "method": "update",
                "args": [{"visible": [j == i for j in range(len(maps))]}, {"title.text": titles[i]}],
            }
            for i, spec in enumerate(maps)
        ]
        fig.update_layout(updatemenus=[{"buttons": buttons, "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}])
    return fig


# ---------------------------------------------------------------------------- state gradients
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
