"""What each signature figure shows, computed once from Signatures, for both renderers.

A *spec* is a renderer-neutral description of a figure: the matrices and curves (numbers as
drawn: recall in percent, differences in points, information in bits), axis labels, titles,
notes, hover lines, the colour scale's name and value range. :mod:`memsig.plots.static` draws a
spec with matplotlib (PNG/SVG files), :mod:`memsig.plots.interactive` with plotly (the HTML
report), so the two show the same numbers under the same labels, colours and titles.

Colours are those of Koppula, Sim & Chin (2018): recall on a fixed 0–100 % scale from white to
dark purple (``Purples``); differences on a symmetric red–blue map around 0 (``RdBu_r``, red = the
first recalls more, see :func:`diverging`); curves in the tab10 palette, a control in its state's
colour. Cells with too little test support are NaN: no estimate, drawn as grey.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from memsig.analysis.distance import aligned_recall
from memsig.probe.signature import CONTROL_PREFIXES, GIVEN, Signature

RECALL_CMAP = "Purples"  # white (0 %) -> dark purple (100 %)
DIFFERENCE_CMAP = "RdBu_r"  # red = the first / the state holds more, blue = the second / less
GRADIENT_CMAP = "viridis"  # state-gradient norms: another quantity, another map
PALETTE = (  # matplotlib's tab10 ("C0".."C9"), which is also plotly's default sequence
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
GREY = "#808080"  # reference lines (majority class, zero)
SYMBOL_AXIS = "input symbol at t−δ"
LAG_AXIS = "lag δ"
BITS = "bits beyond inference"


@dataclass(frozen=True)
class Scale:
    """A colour scale: matplotlib colormap ``cmap`` from ``vmin`` to ``vmax``, its colourbar ``label``."""

    cmap: str
    vmin: float
    vmax: float
    label: str
    decimals: int = 2  # the values' precision in a page (percent and points: 2, bits: 4)


def recall_scale(label: str = "recall (%)") -> Scale:
    """Recall in percent: 0–100, white to dark purple, the same for every signature."""
    return Scale(RECALL_CMAP, 0.0, 100.0, label)


def diverging(values: np.ndarray, label: str, floor: float = 1.0, decimals: int = 2) -> Scale:
    """A red–blue scale symmetric around 0 that holds every finite ``values``, at least ±``floor``."""
    size = np.abs(np.asarray(values, dtype=float))
    vmax = max(float(size[np.isfinite(size)].max(initial=0.0)), floor)
    return Scale(DIFFERENCE_CMAP, -vmax, vmax, label, decimals)


@dataclass
class Heatmap:
    """``values [rows, cols]`` drawn cell by cell (NaN: grey, no estimate), row 0 at the top."""

    values: np.ndarray
    x: list[str]  # column labels (symbols)
    y: list[str]  # row labels (lags)
    scale: Scale
    title: tuple[str, ...] = ()  # lines
    name: str = ""  # the trace's name (legend, menu)
    xlabel: str = SYMBOL_AXIS
    ylabel: str = LAG_AXIS
    hover: list[list[str]] | None = None  # per cell, lines separated by "\n"
    marks: np.ndarray | None = None  # bool [rows, cols]: a grey dot (interval includes the baseline)
    labelled: bool = False  # the values written in the cells
    notes: tuple[str, ...] = ()


@dataclass
class SignatureMap:
    """A state's recall heatmap, its overall recall per lag beside it ("all") and the model's own
    next-symbol accuracy per symbol above it ("forward", when the signature has it)."""

    recall: Heatmap
    overall: Heatmap
    forward: Heatmap | None
    title: str
    notes: tuple[str, ...] = ()


@dataclass
class Panels:
    """Heatmaps in a grid; panels of equal :class:`Scale` share one colourbar."""

    panels: list[Heatmap]
    notes: tuple[str, ...] = ()


@dataclass
class Curve:
    """One line over the lags, with its interval ``low``/``high`` (a band where ``band``)."""

    name: str
    x: list[int]
    y: np.ndarray
    colour: str
    dash: str = "solid"  # solid, dash, dashdot, dot
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    band: bool = False
    markers: bool = True
    group: str = ""  # curves drawn and hidden together
    hover: list[str] | None = None  # per point, lines separated by "\n"


@dataclass
class Curves:
    curves: list[Curve]
    xlabel: str
    ylabel: str
    title: str = ""
    yrange: tuple[float, float] | None = None
    zero_line: bool = False
    decimals: int = 2  # the values' precision in a page


@dataclass
class Points:
    """Labelled points, one per model, each with its vertical 95 % interval ``low``/``high`` (NaN:
    none), in the palette's colours."""

    names: list[str]
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray
    xlabel: str
    ylabel: str
    title: str = ""
    notes: tuple[str, ...] = ()


@dataclass
class Conditional:
    """Memory beyond inference of a signature's states: bits per lag (curves with interval bands),
    per-cell bits ``[lags, symbols]`` of each real state on one diverging scale, and each state's
    total over the lags with its interval (``totals``: state -> (total, low, high))."""

    curves: Curves
    maps: list[Heatmap]
    totals: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------- helpers
def _lags(lags: Sequence[int]) -> list[str]:
    return [str(lag) for lag in lags]


def _lag_span(lags: Sequence[int]) -> str:
    """``1…20`` for consecutive lags, else the lags listed."""
    if list(lags) == list(range(lags[0], lags[-1] + 1)):
        return f"{lags[0]}…{lags[-1]}"
    return ", ".join(_lags(lags))


def nan_note(values: np.ndarray, min_support: int) -> tuple[str, ...]:
    """The note for cells without an estimate, if ``values`` has any."""
    if np.isnan(values).any():
        return (f"hatched grey: fewer than {min_support} test positions (no estimate)",)
    return ()


def interval_note(sig: Signature) -> str:
    """What the grey dots of a recall heatmap mean, for ``sig``'s kind of interval."""
    if sig.block_correct is None:
        return "grey dot: Wilson interval includes the baseline"
    return f"grey dot: interval (block bootstrap, {sig.seeds} probe seeds) includes the baseline"


def _cell_hover(
    head: str,
    lags: Sequence,
    symbols: Sequence[str],
    fmt: Callable[..., str],
    *arrays: np.ndarray,
    empty: Callable[[int, int], str] = lambda j, c: "no estimate",
) -> list[list[str]]:
    """``[K, C]`` hover texts: ``head``, the cell's lag and symbol, then ``fmt(*values)`` of the
    cell's values in ``arrays`` (``empty(j, c)`` where the first is NaN)."""
    text = []
    for j, lag in enumerate(lags):
        row = []
        for c, symbol in enumerate(symbols):
            values = [a[j, c] for a in arrays]
            where = f"{head}lag δ = {lag}, symbol '{symbol}'\n"
            row.append(where + (empty(j, c) if math.isnan(float(values[0])) else fmt(*values)))
        text.append(row)
    return text


def base_state(state: str) -> str:
    """The state a control or given-baseline decoder reads (``random:h`` -> ``h``)."""
    return state.split(":", 1)[1] if state.startswith((*CONTROL_PREFIXES, GIVEN)) else state


def _dash(state: str) -> str:
    return "dash" if state.startswith("random:") else "dashdot" if state.startswith("shuffled:") else "solid"


# ------------------------------------------------------------------------------------ recall
def recall_map(sig: Signature, state: str, name: str | None = None, marks: bool = False) -> Heatmap:
    """Per-symbol recall ``[lags, symbols]`` of ``state`` in %; hover: its interval and support;
    with ``marks`` a dot where the interval includes the baseline (:meth:`Signature.at_baseline`)."""
    i = sig.index(state)
    recall = 100 * sig.recall[i]
    low, high = (100 * x[i] for x in sig.recall_ci())
    support = sig.support[i]
    hover = _cell_hover(
        f"{state}\n",
        sig.lags,
        sig.symbols,
        lambda r, lo, hi, n: f"recall {r:.1f} % [{lo:.1f}, {hi:.1f}]\n{n} test positions",
        recall,
        low,
        high,
        support,
        empty=lambda j, c: f"{support[j, c]} test positions (< {sig.min_support}): no estimate",
    )
    return Heatmap(
        recall,
        list(sig.symbols),
        _lags(sig.lags),
        recall_scale(),
        name=state if name is None else name,
        hover=hover,
        marks=sig.at_baseline()[i] & ~np.isnan(recall) if marks else None,
    )


def signature_map(sig: Signature, state: str, note: str | None = None) -> SignatureMap:
    """The signature heatmap of ``state`` (titled ``state — note``) with its strips."""
    i = sig.index(state)
    recall = recall_map(sig, state, marks=True)
    accuracy = 100 * sig.accuracy[i]
    overall = Heatmap(
        accuracy[:, None],
        ["all"],
        _lags(sig.lags),
        recall_scale(),
        name="all symbols",
        hover=[[f"lag δ = {lag}\noverall recall {a:.1f} %"] for lag, a in zip(sig.lags, accuracy)],
        labelled=True,
    )
    forward = None
    if sig.forward_recall is not None:
        values = 100 * sig.forward_recall
        forward = Heatmap(
            values[None, :],
            list(sig.symbols),
            ["forward"],
            recall_scale(),
            name="forward",
            hover=[[f"model's next-symbol accuracy on '{s}': {v:.1f} %" for s, v in zip(sig.symbols, values)]],
        )
    title = state if note is None else f"{state} — {note}"
    return SignatureMap(
        recall, overall, forward, title, (interval_note(sig), *nan_note(recall.values, sig.min_support))
    )


def recall_panels(sigs: dict[str, Signature], states: dict[str, str]) -> Panels:
    """One recall heatmap per signature (``states``: the state shown of each), one 0–100 % scale."""
    panels = []
    for name, sig in sigs.items():
        panel = recall_map(sig, states[name], name=name)
        panel.title = (name,) if name == states[name] else (name, states[name])
        panels.append(panel)
    return Panels(panels)


def recall_curves(
    sigs: dict[str, Signature], states: Sequence[str] | None = None, real_only: bool = False, prefixed: bool = True
) -> Curves:
    """Overall recall (%) per lag, one curve per (signature, state), with its 95 % interval.

    ``states``: those drawn where present (default all but the ``given:`` decoders, whose gain is
    drawn in bits by :func:`conditional`; ``real_only``: no controls either); with
    ``prefixed`` a named signature's curves are called ``<name>: <state>``. A control is drawn in its
    state's colour (``random:`` dashed, ``shuffled:`` dash-dotted); the majority-class rate is a grey
    dotted line, one per distinct rate (named plainly when all signatures share it).
    """
    curves: list[Curve] = []
    colours: dict[tuple[str, str], str] = {}
    majorities: list[np.ndarray] = []
    for name, sig in sigs.items():
        prefix = f"{name}: " if name and prefixed else ""
        pool = sig.real_states if real_only else [s for s in sig.states if not s.startswith(GIVEN)]
        low, high = (100 * x for x in sig.accuracy_ci())
        for state in [s for s in dict.fromkeys(states or pool) if s in pool]:
            i = sig.index(state)
            colour = colours.setdefault((name, base_state(state)), PALETTE[len(colours) % len(PALETTE)])
            accuracy, positions = 100 * sig.accuracy[i], sig.support[i].sum(-1)
            curves.append(
                Curve(
                    prefix + state,
                    list(sig.lags),
                    accuracy,
                    colour,
                    _dash(state) if state.startswith(CONTROL_PREFIXES) else "solid",
                    low[i],
                    high[i],
                    band=sig.block_correct is not None,
                    hover=[
                        f"{prefix}{state}\nlag δ = {lag}: {a:.1f} % [{lo:.1f}, {hi:.1f}]\n{n} test positions"
                        for lag, a, lo, hi, n in zip(sig.lags, accuracy, low[i], high[i], positions)
                    ],
                )
            )
        rate = 100 * sig.majority_rate[0]
        if not any(len(m) == len(rate) and np.allclose(m, rate, atol=0.05, equal_nan=True) for m in majorities):
            majorities.append(rate)
            curves.append(
                Curve(
                    f"{prefix}majority class",
                    list(sig.lags),
                    rate,
                    GREY,
                    "dot",
                    markers=False,
                    group="majority",
                    hover=[f"majority class, lag δ = {lag}: {r:.1f} %" for lag, r in zip(sig.lags, rate)],
                )
            )
    if len(majorities) == 1:  # shared by every signature
        next(c for c in curves if c.group == "majority").name = "majority class"
    return Curves(curves, LAG_AXIS, "recall (%)", "marginal recall per lag", (0.0, 100.0))


def memory_bits(sig: Signature, state: str, beyond: bool) -> tuple[float, float, float]:
    """The memory of ``state`` summed over the lags, in bits, with its 95 % interval: beyond
    inference (:meth:`~memsig.probe.signature.Signature.conditional_bits`; ``state`` must be one of
    :attr:`~memsig.probe.signature.Signature.given_states`) if ``beyond``, else all the state holds
    about the past, ``Σ_{δ ≥ 1} CE(prior) − CE`` (no interval: NaN)."""
    if beyond:
        c = sig.conditional_bits(state)
        return c["total"], c["total_low"], c["total_high"]
    recall = [j for j, lag in enumerate(sig.lags) if lag >= 1]
    return float(np.nansum(sig.info_bits[sig.index(state), recall])), math.nan, math.nan


def memory_points(sigs: dict[str, Signature], states: dict[str, str], perplexity: dict[str, float]) -> Points:
    """Memory (:func:`memory_bits` of each signature's compared state, summed over the lags ≥ 1 that
    every point's signature has) against test perplexity, one point per signature with a
    perplexity: bits beyond inference where every one has them, else all the state holds (one
    measure and one set of lags for every point; lags in only some signatures are named in a note).
    ValueError if the signatures share no lag ≥ 1."""
    names = [n for n in sigs if n in perplexity]
    beyond = bool(names) and all(states[n] in sigs[n].given_states for n in names)
    lags = [lag for lag in sigs[names[0]].lags if lag >= 1 and all(lag in sigs[n].lags for n in names)] if names else []
    left_out = sorted({lag for n in names for lag in sigs[n].lags if lag >= 1} - set(lags))
    if names and not lags:
        raise ValueError(
            f"{', '.join(names)} share no lag ≥ 1 to sum memory over; probe them at common lags (probe.lags)"
        )
    cut = {n: sigs[n].select(lags=lags) for n in names}
    bits = np.array([memory_bits(cut[n], states[n], beyond) for n in names], dtype=float).reshape(-1, 3)
    measure = BITS if beyond else "bits of the past in the state (CE(prior) − CE)"
    notes = ("bars: 95 % interval (probe seeds and test blocks)",) if beyond else ()
    if left_out:
        notes += (f"summed over the lags every signature has; left out: δ = {_lag_span(left_out)}",)
    return Points(
        names,
        np.array([perplexity[n] for n in names], dtype=float),
        bits[:, 0],
        bits[:, 1],
        bits[:, 2],
        "test perplexity",
        f"{measure}, δ = {_lag_span(lags)}" if lags else measure,  # no lags: no points
        "memory against perplexity",
        notes,
    )


# ------------------------------------------------------------------------------- differences
def difference(
    a: Signature,
    b: Signature,
    state_a: str,
    state_b: str | None = None,
    labels: tuple[str, str] = ("A", "B"),
    title: str | None = None,
    label: str | None = None,
) -> Heatmap:
    """Recall of ``a`` minus ``b`` in points ``[shared lags, shared symbols]`` on a symmetric
    red–blue scale (red: ``a`` recalls more); cells NaN in either signature have no estimate.
    ``title`` and the colourbar ``label`` replace the default ones."""
    state_b = state_b or state_a
    first, second = labels
    lags, symbols, ra, rb = aligned_recall(a, b, state_a, state_b, same_symbols=False)
    diff = 100 * (ra - rb)
    hover = _cell_hover(
        "",
        lags,
        symbols,
        lambda d, x, y: f"{first}: {x:.1f} %\n{second}: {y:.1f} %\ndifference {d:+.1f} points",
        diff,
        100 * ra,
        100 * rb,
    )
    return Heatmap(
        diff,
        list(symbols),
        _lags(lags),
        diverging(diff, label or f"recall {first} − {second} (points)"),
        title=(title,)
        if title
        else (f"{first} ({state_a}) − {second} ({state_b})", f"red: {first} recalls better, blue: {second} better"),
        name=f"{first} − {second}",
        hover=hover,
        notes=nan_note(diff, max(a.min_support, b.min_support)),
    )


def lift_panels(sig: Signature, base: Signature, state: str) -> Panels:
    """The state's recall, the backward-context baseline's (what the later symbols alone imply) on
    the same lags and symbols and one 0–100 % scale, and the lift, recall minus baseline."""
    lags, symbols, ra, rb = aligned_recall(sig, base, state, base.states[0], same_symbols=False)
    maps = [
        Heatmap(100 * values, list(symbols), _lags(lags), recall_scale(), (title,), name=name)
        for values, title, name in (
            (ra, f"{state}: recall of x(t−δ)", state),
            (rb, "later symbols alone (baseline)", "later symbols"),
        )
    ]
    lift = difference(
        sig,
        base,
        state,
        base.states[0],
        (state, "later symbols"),
        "lift: memory beyond inference",
        "recall − baseline (points)",
    )
    return Panels([*maps, lift], lift.notes)


def confusion_map(sig: Signature, state: str, lag: int) -> Heatmap:
    """Row-normalised confusion ``[true, predicted]`` (%) of the decoder (``state``, ``lag``)."""
    if lag not in sig.lags:
        raise ValueError(f"lag {lag} not in signature lags {sig.lags}")
    i, k = sig.index(state), sig.lags.index(lag)
    conf = sig.confusion[i, k].astype(float)
    rows = conf.sum(-1, keepdims=True)
    share = 100 * np.divide(conf, rows, out=np.full_like(conf, np.nan), where=rows > 0)
    return Heatmap(
        share,
        list(sig.symbols),
        list(sig.symbols),
        recall_scale("share of true symbol's positions (%)"),
        (f"{state}, lag {lag}: accuracy {100 * sig.accuracy[i, k]:.1f} %",),
        name=f"{state}, lag {lag}",
        xlabel="predicted symbol",
        ylabel=f"true symbol at t−{lag}",
    )


# ------------------------------------------------------------------- memory beyond inference
def conditional(sig: Signature) -> Conditional:
    """Memory beyond inference (:meth:`Signature.conditional_bits`) of every state with a
    ``given:`` decoder: a curve per state (controls in their state's colour), a map per real
    state on one diverging scale, and the totals. ValueError when the signature has none."""
    states = sig.given_states
    if not states:
        raise ValueError(
            "this signature has no memory beyond inference: it needs the 'backward' state, 'given:<state>' "
            "decoders and per-block cross-entropy (probe=default with a baseline_order)"
        )
    bits = {s: sig.conditional_bits(s) for s in states}
    colours: dict[str, str] = {}
    curves = []
    for state, b in bits.items():
        colour = colours.setdefault(base_state(state), PALETTE[len(colours) % len(PALETTE)])
        curves.append(
            Curve(
                state,
                list(sig.lags),
                b["bits"],
                colour,
                _dash(state),
                b["low"],
                b["high"],
                band=True,
                hover=[
                    f"{state}\nlag δ = {lag}: {v:.3f} bits [{lo:.3f}, {hi:.3f}]"
                    for lag, v, lo, hi in zip(sig.lags, b["bits"], b["low"], b["high"])
                ],
            )
        )
    real = [s for s in states if s in sig.real_states]
    scale = diverging(np.stack([bits[s]["cells"] for s in real]) if real else np.zeros(1), BITS, 0.1, 4)
    maps = []
    for state in real:
        b, support = bits[state], sig.support[sig.index(GIVEN + state)]
        maps.append(
            Heatmap(
                b["cells"],
                list(sig.symbols),
                _lags(sig.lags),
                scale,
                (state, "bits of x(t−δ) beyond inference"),
                name=state,
                hover=_cell_hover(
                    f"{state}\n",
                    sig.lags,
                    sig.symbols,
                    lambda v, lo, hi, n: f"{v:+.3f} bits [{lo:.3f}, {hi:.3f}]\n{n} test positions",
                    b["cells"],
                    b["cells_low"],
                    b["cells_high"],
                    support,
                ),
            )
        )
    totals = {s: (b["total"], b["total_low"], b["total_high"]) for s, b in bits.items()}
    notes = tuple(total_text(s, *t) for s, t in totals.items() if s in real)
    if maps:
        notes += nan_note(np.stack([m.values for m in maps]), sig.min_support)
    return Conditional(
        Curves(curves, LAG_AXIS, BITS, "memory beyond inference per lag", zero_line=True, decimals=4),
        maps,
        totals,
        notes,
    )


def total_text(state: str, total: float, low: float, high: float) -> str:
    """``state``'s memory beyond inference summed over the lags, with its interval, in words."""
    return f"{state}: {total:.2f} bits summed over the lags [{low:.2f}, {high:.2f}]"
