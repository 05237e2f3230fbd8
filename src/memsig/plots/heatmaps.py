"""Memory-signature figures, laid out as in Koppula, Sim & Chin (2018).

Every function takes :class:`~memsig.probe.signature.Signature` objects and returns a
:class:`matplotlib.figure.Figure` built without pyplot (no global figure state); write
it with :func:`save_figure`. Recall is drawn in percent on a fixed 0–100 scale, white
(0 %) to dark purple (100 %); cells with too little test support (NaN) are left as a
hatched grey background.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator

from memsig.analysis.distance import aligned_recall
from memsig.data.io import atomic_write_bytes
from memsig.probe.signature import CONTROL_PREFIXES, Signature

RECALL = Normalize(0, 100)
CELL = 0.3  # inches per heatmap cell


def _cmap(name: str) -> Colormap:
    return matplotlib.colormaps[name].with_extremes(bad=(0, 0, 0, 0))  # NaN transparent: the hatch shows


def _grid(ax: Axes, values: np.ndarray, cmap: str = "Purples", norm: Normalize = RECALL) -> AxesImage:
    """Draw ``values [rows, cols]`` cell by cell; NaN cells masked over a hatched grey background."""
    ax.patch.set_facecolor("0.9")
    ax.patch.set_hatch("///")
    ax.patch.set_edgecolor("0.7")
    return ax.imshow(np.ma.masked_invalid(values), cmap=_cmap(cmap), norm=norm, aspect="auto", interpolation="nearest")


def _label(ax: Axes, lags: list[int], symbols: list[str], ylabel: bool = True) -> None:
    """Symbols on x (as themselves), lags on y (first lag at the top)."""
    ax.set_xticks(range(len(symbols)), symbols, fontsize=9)
    ax.set_yticks(range(len(lags)), [str(lag) for lag in lags], fontsize=8)
    ax.set_xlabel("input symbol at t−δ")
    if ylabel:
        ax.set_ylabel("lag δ")


def _nan_note(fig: Figure, values: np.ndarray, min_support: int, intervals: str = "") -> None:
    notes = [intervals] if intervals else []
    if np.isnan(values).any():
        notes.append(f"hatched grey: fewer than {min_support} test positions (no estimate)")
    if notes:
        fig.supxlabel("; ".join(notes), fontsize=8)


def signature_heatmap(sig: Signature, state: str, title: str | None = None) -> Figure:
    """Per-symbol recall ``[lags, symbols]`` of ``state`` (lag 1 at the top), in %.

    Above it, a strip with the model's own forward (next-symbol) accuracy per symbol when the
    signature has one; right of it, a column with the marginal accuracy per lag ("all"). A grey
    dot marks a cell whose interval includes its baseline (:meth:`Signature.at_baseline`: the
    shuffled control's recall, else the prior), i.e. recall not told apart from chance.
    """
    i = sig.index(state)
    recall, forward = 100 * sig.recall[i], sig.forward_recall
    k, c = recall.shape
    rows = 1 if forward is None else 2
    fig = Figure(figsize=(2.2 + CELL * (c + 1.5), 1.6 + CELL * (k + rows - 1)), layout="constrained")
    grid = fig.add_gridspec(rows, 3, height_ratios=[1.2, k][-rows:], width_ratios=[c, 1.5, 0.6])
    ax = fig.add_subplot(grid[-1, 0])
    image = _grid(ax, recall)
    _label(ax, sig.lags, sig.symbols)
    rows_, cols_ = np.nonzero(sig.at_baseline()[i] & ~np.isnan(recall))
    ax.scatter(cols_, rows_, s=6, c="0.55", marker="o", linewidths=0)
    marginal = fig.add_subplot(grid[-1, 1], sharey=ax)
    accuracy = 100 * sig.accuracy[i]
    _grid(marginal, accuracy[:, None])
    marginal.set_xticks([0], ["all"])
    marginal.tick_params(labelleft=False)
    for j, value in enumerate(accuracy):
        marginal.text(0, j, f"{value:.0f}", ha="center", va="center", fontsize=7, color="w" if value > 60 else "k")
    if forward is not None:
        top = fig.add_subplot(grid[0, 0], sharex=ax)
        _grid(top, 100 * forward[None, :])
        top.set_yticks([0], ["forward"])
        top.tick_params(labelbottom=False)
    fig.colorbar(image, cax=fig.add_subplot(grid[:, 2]), label="recall (%)")
    fig.suptitle(state if title is None else f"{state} — {title}")
    _nan_note(fig, recall, sig.min_support, intervals=_interval_note(sig))
    return fig


def _interval_note(sig: Signature) -> str:
    if sig.block_correct is None:
        return "grey dot: Wilson interval includes the baseline"
    return f"grey dot: interval (block bootstrap, {sig.seeds} probe seeds) includes the baseline"


def marginal_curves(sigs: dict[str, Signature] | Signature, states: list[str] | None = None) -> Figure:
    """Marginal accuracy (%) per lag: one curve per (signature name, state) present in that signature.

    Controls (``random:`` / ``shuffled:``) are dashed in their state's colour; the
    majority-class rate is a grey dotted line, one per distinct rate.
    """
    sigs = {"": sigs} if isinstance(sigs, Signature) else sigs
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours: dict[tuple[str, str], str] = {}
    majorities: list[np.ndarray] = []
    for name, sig in sigs.items():
        prefix = f"{name}: " if name else ""
        for state in [s for s in dict.fromkeys(states or sig.states) if s in sig.states]:
            base = state.split(":", 1)[1] if state.startswith(CONTROL_PREFIXES) else state
            colour = colours.setdefault((name, base), f"C{len(colours) % 10}")
            style = "-" if base == state else "--" if state.startswith("random:") else "-."
            accuracy = 100 * sig.accuracy[sig.index(state)]
            ax.plot(sig.lags, accuracy, style, color=colour, marker=".", label=prefix + state)
            if sig.block_correct is not None:  # the two-source interval as a band
                low, high = (100 * x[sig.index(state)] for x in sig.accuracy_ci())
                ax.fill_between(sig.lags, low, high, color=colour, alpha=0.2, linewidth=0)
        rate = 100 * sig.majority_rate[0]
        if not any(
            len(m) == len(rate) and np.allclose(m, rate, atol=0.05, equal_nan=True) for m in majorities
        ):  # one line per distinct rate
            majorities.append(rate)
            ax.plot(sig.lags, rate, ":", color="0.5", label=f"{prefix}majority class")
    if len(majorities) == 1:  # shared by every signature
        next(line for line in ax.get_lines() if line.get_label().endswith("majority class")).set_label("majority class")
    ax.set(xlabel="lag δ", ylabel="recall (%)", ylim=(0, 100), title="marginal recall per lag")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    entries = len(ax.get_lines())
    if entries > 8:  # beside the axes, in as many columns as it takes
        fig.set_figwidth(7 + 2.6 * math.ceil(entries / 22))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), ncols=math.ceil(entries / 22))
    else:
        ax.legend(fontsize=8, loc="upper right")
    return fig


def difference_map(
    a: Signature, b: Signature, state_a: str, state_b: str | None = None, labels: tuple[str, str] = ("A", "B")
) -> Figure:
    """Recall of ``a`` minus ``b`` in points ``[shared lags, shared symbols]``: red = a better, blue = b better.

    The colour scale is symmetric around 0; cells NaN in either signature are masked.
    """
    state_b = state_b or state_a
    lags, symbols, ra, rb = aligned_recall(a, b, state_a, state_b, same_symbols=False)
    diff = 100 * (ra - rb)
    vmax = max(float(np.nanmax(np.abs(diff), initial=0.0)), 1.0)
    fig = Figure(figsize=(max(5.0, 2.2 + CELL * len(symbols)), 1.8 + CELL * len(lags)), layout="constrained")
    ax = fig.add_subplot()
    image = _grid(ax, diff, "RdBu_r", Normalize(-vmax, vmax))
    _label(ax, lags, symbols)
    fig.colorbar(image, ax=ax, label=f"recall {labels[0]} − {labels[1]} (points)")
    ax.set_title(
        f"{labels[0]} ({state_a}) − {labels[1]} ({state_b})\nred: {labels[0]} recalls better, blue: {labels[1]} better",
        fontsize=10,
    )
    _nan_note(fig, diff, max(a.min_support, b.min_support))
    return fig


def memory_and_inference(sig: Signature, base: Signature, state: str) -> Figure:
    """Three panels on the same lags and symbols: the state's recall, the backward-context
    baseline's (what the later symbols alone imply; one 0–100 % scale for both), and the lift,
    recall minus baseline (diverging: red = the state recalls more than inference gives)."""
    lags, symbols, ra, rb = aligned_recall(sig, base, state, base.states[0], same_symbols=False)
    lift = 100 * (ra - rb)
    vmax = max(float(np.nanmax(np.abs(lift), initial=0.0)), 1.0)
    fig = Figure(figsize=(2.5 + 3 * (0.8 + CELL * len(symbols)), 1.9 + CELL * len(lags)), layout="constrained")
    axes = fig.subplots(1, 3)
    for j, (ax, values, title) in enumerate(
        zip(axes[:2], (ra, rb), (f"{state}: recall of x(t−δ)", "later symbols alone (baseline)"))
    ):
        image = _grid(ax, 100 * values)
        _label(ax, lags, symbols, ylabel=j == 0)
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=list(axes[:2]), label="recall (%)", shrink=0.9)
    diverging = _grid(axes[2], lift, "RdBu_r", Normalize(-vmax, vmax))
    _label(axes[2], lags, symbols, ylabel=False)
    axes[2].set_title("lift: memory beyond inference", fontsize=10)
    fig.colorbar(diverging, ax=axes[2], label="recall − baseline (points)", shrink=0.9)
    _nan_note(fig, lift, max(sig.min_support, base.min_support))
    return fig


def confusion_plot(sig: Signature, state: str, lag: int) -> Figure:
    """Row-normalised confusion ``[true, predicted]`` (%) of the decoder (``state``, ``lag``)."""
    if lag not in sig.lags:
        raise ValueError(f"lag {lag} not in signature lags {sig.lags}")
    i, k = sig.index(state), sig.lags.index(lag)
    conf = sig.confusion[i, k].astype(float)
    rows = conf.sum(-1, keepdims=True)
    share = 100 * np.divide(conf, rows, out=np.full_like(conf, np.nan), where=rows > 0)
    c = len(sig.symbols)
    fig = Figure(figsize=(2.2 + CELL * c, 1.2 + CELL * c), layout="constrained")
    ax = fig.add_subplot()
    image = _grid(ax, share)
    ticks = range(c)
    ax.set_xticks(ticks, sig.symbols, fontsize=9)
    ax.set_yticks(ticks, sig.symbols, fontsize=9)
    ax.set(xlabel="predicted symbol", ylabel=f"true symbol at t−{lag}")
    ax.set_title(f"{state}, lag {lag}: accuracy {100 * sig.accuracy[i, k]:.1f} %", fontsize=10)
    fig.colorbar(image, ax=ax, label="share of true symbol's positions (%)")
    return fig


def side_by_side(sigs: dict[str, Signature], state: str | dict[str, str]) -> Figure:
    """One recall heatmap per signature in a row, on one shared 0–100 % scale and colourbar.

    ``state`` is one state name for all signatures or one per signature name.
    """
    states = state if isinstance(state, dict) else {name: state for name in sigs}
    k = max(len(s.lags) for s in sigs.values())
    c = max(len(s.symbols) for s in sigs.values())
    cols = min(len(sigs), 4)
    rows = math.ceil(len(sigs) / cols)
    fig = Figure(figsize=(1.5 + cols * (0.8 + CELL * c), rows * (1.8 + CELL * k)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for j, (ax, (name, sig)) in enumerate(zip(axes, sigs.items())):
        image = _grid(ax, 100 * sig.recall[sig.index(states[name])])
        _label(ax, sig.lags, sig.symbols, ylabel=j % cols == 0)
        ax.set_title(name if name == states[name] else f"{name}\n{states[name]}", fontsize=10)
    for ax in axes[len(sigs) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=list(axes), label="recall (%)")
    return fig


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
