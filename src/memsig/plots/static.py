"""Memory-signature figures as matplotlib Figures (PNG/SVG), laid out as in Koppula, Sim & Chin (2018).

:func:`to_matplotlib` draws a figure specification of :mod:`memsig.plots.specs`; the functions
below build the spec from :class:`~memsig.probe.signature.Signature` objects and draw it. Every
figure is built without pyplot (no global figure state); write it with :func:`save_figure`.
Recall is drawn in percent on a fixed 0–100 scale, white (0 %) to dark purple (100 %); cells with
too little test support (NaN) are left as a hatched grey background.
"""

from __future__ import annotations

import io
import math
import textwrap
from functools import singledispatch
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator

import memsig.plots.specs as specs
from memsig.data.io import atomic_write_bytes
from memsig.plots.specs import Conditional, Curves, Heatmap, Panels, Points, Scale, SignatureMap
from memsig.probe.signature import Signature

CELL = 0.3  # inches per heatmap cell
LINE = {"solid": "-", "dash": "--", "dashdot": "-.", "dot": ":"}


def _cmap(name: str) -> Colormap:
    return matplotlib.colormaps[name].with_extremes(bad=(0, 0, 0, 0))  # NaN transparent: the hatch shows


def _grid(ax: Axes, values: np.ndarray, scale: Scale) -> AxesImage:
    """Draw ``values [rows, cols]`` cell by cell on ``scale``; NaN cells masked over a hatched grey background."""
    ax.patch.set_facecolor("0.9")
    ax.patch.set_hatch("///")
    ax.patch.set_edgecolor("0.7")
    norm = Normalize(scale.vmin, scale.vmax)
    return ax.imshow(
        np.ma.masked_invalid(values), cmap=_cmap(scale.cmap), norm=norm, aspect="auto", interpolation="nearest"
    )


def _label(ax: Axes, spec: Heatmap, ylabel: bool = True) -> None:
    """Column labels on x (as themselves), row labels on y (the first at the top)."""
    ax.set_xticks(range(len(spec.x)), spec.x, fontsize=9)
    ax.set_yticks(range(len(spec.y)), spec.y, fontsize=8 if spec.ylabel == specs.LAG_AXIS else 9)
    ax.set_xlabel(spec.xlabel)
    if ylabel:
        ax.set_ylabel(spec.ylabel)


def _heatmap(ax: Axes, spec: Heatmap, ylabel: bool = True) -> AxesImage:
    """A heatmap spec on ``ax``: cells, labels, marks, values written in the cells, title."""
    image = _grid(ax, spec.values, spec.scale)
    _label(ax, spec, ylabel)
    if spec.marks is not None:
        rows, cols = np.nonzero(spec.marks)
        ax.scatter(cols, rows, s=6, c="0.55", marker="o", linewidths=0)
    if spec.title:
        ax.set_title("\n".join(spec.title), fontsize=10)
    return image


def _notes(fig: Figure, notes: tuple[str, ...]) -> None:
    """The notes under the figure, wrapped to its width (8-point text: about 15 characters an inch)."""
    if notes:
        fig.supxlabel("\n".join(textwrap.wrap("; ".join(notes), int(fig.get_figwidth() * 15))), fontsize=8)


@singledispatch
def to_matplotlib(spec: object) -> Figure:
    """The matplotlib Figure of a :mod:`memsig.plots.specs` figure specification."""
    raise TypeError(f"no matplotlib drawing of {type(spec).__name__}")


@to_matplotlib.register
def _draw_heatmap(spec: Heatmap) -> Figure:
    k, c = spec.values.shape
    width, height = 2.2 + CELL * c, 1.2 + CELL * k
    if len(spec.title) > 1:  # room for a two-line title
        width, height = max(5.0, width), height + 0.6
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    image = _heatmap(ax, spec)
    fig.colorbar(image, ax=ax, label=spec.scale.label)
    _notes(fig, spec.notes)
    return fig


@to_matplotlib.register
def _draw_signature_map(spec: SignatureMap) -> Figure:
    k, c = spec.recall.values.shape
    rows = 1 if spec.forward is None else 2
    fig = Figure(figsize=(2.2 + CELL * (c + 1.5), 1.6 + CELL * (k + rows - 1)), layout="constrained")
    grid = fig.add_gridspec(rows, 3, height_ratios=[1.2, k][-rows:], width_ratios=[c, 1.5, 0.6])
    ax = fig.add_subplot(grid[-1, 0])
    image = _heatmap(ax, spec.recall)
    marginal = fig.add_subplot(grid[-1, 1], sharey=ax)
    _grid(marginal, spec.overall.values, spec.overall.scale)
    marginal.set_xticks(range(len(spec.overall.x)), spec.overall.x)
    marginal.tick_params(labelleft=False)
    for j, value in enumerate(spec.overall.values[:, 0]):
        marginal.text(0, j, f"{value:.0f}", ha="center", va="center", fontsize=7, color="w" if value > 60 else "k")
    if spec.forward is not None:
        top = fig.add_subplot(grid[0, 0], sharex=ax)
        _grid(top, spec.forward.values, spec.forward.scale)
        top.set_yticks([0], spec.forward.y)
        top.tick_params(labelbottom=False)
    fig.colorbar(image, cax=fig.add_subplot(grid[:, 2]), label=spec.recall.scale.label)
    fig.suptitle(spec.title)
    _notes(fig, spec.notes)
    return fig


def _panels(fig: Figure, axes: list[Axes], panels: list[Heatmap], cols: int) -> None:
    """Each panel on its axes (y label in the first column), one colourbar per distinct scale."""
    images: dict[Scale, tuple[AxesImage, list[Axes]]] = {}
    for j, (ax, panel) in enumerate(zip(axes, panels)):
        image = _heatmap(ax, panel, ylabel=j % cols == 0)
        images.setdefault(panel.scale, (image, []))[1].append(ax)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    shrink = 0.9 if len(images) > 1 else 1.0
    for scale, (image, on) in images.items():
        fig.colorbar(image, ax=on if len(images) > 1 else list(axes), label=scale.label, shrink=shrink)


@to_matplotlib.register
def _draw_panels(spec: Panels) -> Figure:
    k = max(len(p.y) for p in spec.panels)
    c = max(len(p.x) for p in spec.panels)
    cols = min(len(spec.panels), 4)
    rows = math.ceil(len(spec.panels) / cols)
    scales = len({p.scale for p in spec.panels})
    fig = Figure(
        figsize=(0.5 + scales + cols * (0.8 + CELL * c), rows * (1.8 + CELL * k) + 0.1 * (scales > 1)),
        layout="constrained",
    )
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    _panels(fig, axes, spec.panels, cols)
    _notes(fig, spec.notes)
    return fig


def _curves(ax: Axes, spec: Curves) -> None:
    for curve in spec.curves:
        style = LINE[curve.dash]
        ax.plot(curve.x, curve.y, style, color=curve.colour, marker="." if curve.markers else None, label=curve.name)
        if curve.band and curve.low is not None:  # the interval as a band
            ax.fill_between(curve.x, curve.low, curve.high, color=curve.colour, alpha=0.2, linewidth=0)
    if spec.zero_line:
        ax.axhline(0, color=specs.GREY, linewidth=0.8, zorder=0)
    ax.set(xlabel=spec.xlabel, ylabel=spec.ylabel, title=spec.title)
    if spec.yrange is not None:
        ax.set_ylim(*spec.yrange)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


@to_matplotlib.register
def _draw_curves(spec: Curves) -> Figure:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    _curves(ax, spec)
    entries = len(ax.get_lines())
    if entries > 8:  # beside the axes, in as many columns as it takes
        fig.set_figwidth(7 + 2.6 * math.ceil(entries / 22))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), ncols=math.ceil(entries / 22))
    else:
        ax.legend(fontsize=8, loc="upper right")
    return fig


@to_matplotlib.register
def _draw_points(spec: Points) -> Figure:
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, name in enumerate(spec.names):
        x, y, low, high = (float(v[i]) for v in (spec.x, spec.y, spec.low, spec.high))
        bar = [[y - low], [high - y]] if math.isfinite(low) else None
        ax.errorbar(x, y, yerr=bar, fmt="o", color=specs.PALETTE[i % len(specs.PALETTE)], capsize=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel=spec.xlabel, ylabel=spec.ylabel, title=spec.title)
    ax.grid(alpha=0.3)
    _notes(fig, spec.notes)
    return fig


@to_matplotlib.register
def _draw_conditional(spec: Conditional) -> Figure:
    n = len(spec.maps)
    k = len(spec.curves.curves[0].x)
    c = max((len(m.x) for m in spec.maps), default=0)
    fig = Figure(figsize=(5.5 + n * (0.8 + CELL * c) + 1.0, 2.4 + max(CELL * k, 2.2)), layout="constrained")
    axes = fig.subplots(1, 1 + n, width_ratios=[5, *[0.8 + CELL * c] * n], squeeze=False)[0]
    _curves(axes[0], spec.curves)
    axes[0].legend(fontsize=8)
    if n:
        _panels(fig, list(axes[1:]), spec.maps, n)
        axes[1].set_ylabel(specs.LAG_AXIS)
    fig.suptitle("memory beyond inference (bits)")
    _notes(fig, spec.notes)
    return fig


# ------------------------------------------------------------------------------- the figures
def signature_heatmap(sig: Signature, state: str, title: str | None = None) -> Figure:
    """Per-symbol recall ``[lags, symbols]`` of ``state`` (lag 1 at the top), in %.

    Above it, a strip with the model's own forward (next-symbol) accuracy per symbol when the
    signature has one; right of it, a column with the marginal accuracy per lag ("all"). A grey
    dot marks a cell whose interval includes its baseline (:meth:`Signature.at_baseline`: the
    shuffled control's recall, else the prior), i.e. recall not told apart from chance.
    """
    return to_matplotlib(specs.signature_map(sig, state, title))


def marginal_curves(sigs: dict[str, Signature] | Signature, states: list[str] | None = None) -> Figure:
    """Marginal accuracy (%) per lag: one curve per (signature name, state) present in that signature.

    Controls (``random:`` / ``shuffled:``) are dashed in their state's colour; the
    majority-class rate is a grey dotted line, one per distinct rate; the interval is a band
    where the signature has block counts.
    """
    sigs = {"": sigs} if isinstance(sigs, Signature) else sigs
    return to_matplotlib(specs.recall_curves(sigs, states))


def difference_map(
    a: Signature, b: Signature, state_a: str, state_b: str | None = None, labels: tuple[str, str] = ("A", "B")
) -> Figure:
    """Recall of ``a`` minus ``b`` in points ``[shared lags, shared symbols]``: red = a better, blue = b better.

    The colour scale is symmetric around 0; cells NaN in either signature are masked.
    """
    return to_matplotlib(specs.difference(a, b, state_a, state_b, labels))


def memory_and_inference(sig: Signature, base: Signature, state: str) -> Figure:
    """Three panels on the same lags and symbols: the state's recall, the backward-context
    baseline's (what the later symbols alone imply; one 0–100 % scale for both), and the lift,
    recall minus baseline (diverging: red = the state recalls more than inference gives)."""
    return to_matplotlib(specs.lift_panels(sig, base, state))


def confusion_plot(sig: Signature, state: str, lag: int) -> Figure:
    """Row-normalised confusion ``[true, predicted]`` (%) of the decoder (``state``, ``lag``)."""
    return to_matplotlib(specs.confusion_map(sig, state, lag))


def side_by_side(sigs: dict[str, Signature], state: str | dict[str, str]) -> Figure:
    """One recall heatmap per signature in a row, on one shared 0–100 % scale and colourbar.

    ``state`` is one state name for all signatures or one per signature name.
    """
    states = state if isinstance(state, dict) else {name: state for name in sigs}
    return to_matplotlib(specs.recall_panels(sigs, states))


def conditional_memory(sig: Signature) -> Figure:
    """Memory beyond inference (:meth:`Signature.conditional_bits`): bits per lag of each state with
    a ``given:`` decoder (interval bands; controls dash-dotted), beside the bits per symbol and lag
    of each real state on one diverging scale (red: the state adds bits to the baseline's
    prediction); the totals over the lags below."""
    return to_matplotlib(specs.conditional(sig))


def departure_bars(rows: list[dict], top: int = 30) -> Figure:
    """Bars of the ``top`` largest and smallest ``distance`` values of ``rows`` (dicts with
    ``basis``, ``distance``, ``lambda``, sorted largest first): which bases of a factorized
    kernel change the signature most, and which barely do (pruning candidates)."""
    shown = rows if len(rows) <= 2 * top else rows[:top] + rows[-top:]
    fig = Figure(figsize=(max(6.0, 0.22 * len(shown) + 1.5), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(shown))
    ax.bar(
        x,
        [100 * r["distance"] for r in shown],
        color=["#54278f" if i < top or len(rows) <= 2 * top else "#bcbddc" for i in range(len(shown))],
    )
    ax.set_xticks(x, [r["basis"] for r in shown], rotation=90, fontsize=8)
    ax.set_xlabel("basis (bigram)" + ("" if len(rows) <= 2 * top else f": the {top} largest, then the {top} smallest"))
    ax.set_ylabel("departure from base kernel\n(mean |Δ recall|, points)")
    ax.set_title(f"{len(rows)} trained bases, base + one basis at its typical λ", fontsize=10)
    return fig


def save_figure(fig: Figure, stem: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``stem.<format>`` for each format (atomically; png at 150 dpi), close ``fig``; the paths."""
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150)
        path = Path(stem).parent / f"{Path(stem).name}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    if fig.canvas.manager is not None:  # registered with pyplot (not the case for figures built here)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
