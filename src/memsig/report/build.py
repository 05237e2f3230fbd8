"""The content of a report page: what is shown for a probe run, a train run and a study (a multirun or
signature files, :class:`~memsig.report.study.Study`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from memsig.data.io import atomic_write_bytes
from memsig.plots import specs
from memsig.plots.interactive import (
    GradientLike,
    difference_menu,
    gradient_decay,
    gradient_map,
    singular_spectra,
    to_plotly,
)
from memsig.probe.signature import Signature
from memsig.report.page import Page
from memsig.report.sources import RunResults, checkpoint_status, kind_of, load_run
from memsig.report.study import Study, StudySettings, corpus_config, corpus_of, describe_model, recall_rows

REPORT = "report.html"
HOW_TO_READ = (
    "Interactive figures: hover a cell or point for its value, drag to zoom, double-click to zoom back; "
    "click a legend entry to hide a curve. The page is self-contained and works offline."
)
HEATMAP_NOTE = (
    "Recall of the input symbol at t−δ (x: the symbol, y: lag δ, δ = 1 at the top) by the decoder trained "
    "on one state; white 0 % → dark purple 100 % on a fixed scale, as in Koppula, Sim & Chin (2018). "
    "Grey cells have fewer than {min_support} test positions (no estimate). Hover a cell for its 95 % "
    "interval (block bootstrap over the test stream plus the spread over probe seeds; Wilson for older "
    "signature files) and its test positions."
)
STRIPS_NOTE = (
    "Beside each heatmap, the column 'all' is the overall recall per lag; the strip 'forward' on top is "
    "the model's own next-symbol accuracy per symbol."
)
CURVES_NOTE = (
    "Overall recall per lag. Solid: the trained model's states. Dashed (random:): the same probe on a "
    "randomly initialised copy of the model — memory the architecture gives for free. Dash-dotted "
    "(shuffled:): the real states shuffled across positions, which must sit at the majority rate. "
    "Dotted grey: always answering the most frequent symbol; a decoder with nothing left to go on "
    "does that."
)


def write_report(path: str | Path, settings: StudySettings | None = None) -> Path:
    """Write ``<path>/report.html``, one self-contained interactive page (atomic); its path.

    ``path`` is a probe run dir, a train run dir or a multirun dir (see :mod:`memsig.report.sources`);
    ``settings``: how a multirun names and compares its models. :class:`ReportError` when ``path`` holds
    nothing to report (the message says what it should hold and what writes it).
    """
    path = Path(path)
    return write_page(build_report(path, settings), path / REPORT)


def write_page(page: Page, out: Path) -> Path:
    """Write ``page`` rendered to ``out`` (atomic); ``out``."""
    atomic_write_bytes(out, page.render().encode())
    return out


def build_report(path: str | Path, settings: StudySettings | None = None) -> Page:
    """The page :func:`write_report` writes (not rendered yet)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "sweep":
        return study_page(Study.from_sweep(path, settings))
    return _run_page(load_run(path, kind))


# ------------------------------------------------------------------------------------- tables
def _value(v: Any) -> str:
    """A short text for a setting: long lists abbreviated, floats to 4 significant digits."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        shown = [_value(x) for x in (v if len(v) <= 8 else [*v[:2], v[-1]])]
        return ", ".join(shown) if len(v) <= 8 else f"{shown[0]}, {shown[1]}, …, {shown[2]} ({len(v)} values)"
    return str(v)


def settings_rows(settings: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """A nested config as ``{"setting": dotted key, "value": text}`` rows."""
    rows = []
    for key, v in settings.items():
        if isinstance(v, dict) and v:
            rows += settings_rows(v, f"{prefix}{key}.")
        else:
            rows.append({"setting": f"{prefix}{key}", "value": _value(v)})
    return rows


def _summary_rows(sig: Signature, run: RunResults) -> list[dict[str, Any]]:
    meta = sig.meta
    probe = meta.get("probe") or {}
    train = run.train_result or {}
    corpus = corpus_config(meta)
    sha = meta.get("checkpoint_sha256")
    rows = {
        "model": describe_model(meta),
        "parameters": f"{train['params']:,}" if train.get("params") else None,
        "corpus": corpus_of(meta),
        "corpus file": corpus.get("path") or corpus.get("root"),
        "probed split": meta.get("split"),
        "checkpoint": meta.get("checkpoint"),
        "checkpoint sha256": f"{sha} ({checkpoint_status(sig, run.run_dir)})" if sha else None,
        "train run": str(run.train_dir) if run.train_dir else "not found (perplexities unknown)",
        "probe": sig.provenance(),
        "states": ", ".join(sig.real_states),
        "controls": ", ".join(s for s in sig.states if s not in sig.real_states) or "none",
        "lags": _value(list(sig.lags)),
        "seed": meta.get("seed", probe.get("seed")),
        "probe wall time (s)": (run.probe_result or {}).get("wall_time_s"),
    }
    return [{"": k, "value": v} for k, v in rows.items() if v is not None]


def perplexity_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per evaluated split (``val``, ``test``, ``eval/<corpus>``): perplexity, bits and nats per character."""
    metrics = result.get("metrics") or {}
    splits = [k.removesuffix("/ppl") for k in sorted(metrics) if k.endswith("/ppl")]
    return [
        {
            "split": s,
            "perplexity": round(metrics[f"{s}/ppl"], 3),
            "bits/char": round(metrics[f"{s}/bpc"], 4) if f"{s}/bpc" in metrics else None,
            "nats/char": round(metrics[f"{s}/loss"], 4) if f"{s}/loss" in metrics else None,
        }
        for s in splits
    ]


def correlation_rows(correlation: dict[str, Any], lags: list[int]) -> list[dict[str, Any]]:
    """Spearman's ρ of gradient memory vs probe recall, one row per state (per lag, then summaries)."""

    def num(x: Any) -> Any:
        return round(x, 3) if isinstance(x, float) else x

    rows = []
    for state, value in correlation.items():
        row: dict[str, Any] = {"state": state}
        for key, v in value.items() if isinstance(value, dict) else [("ρ", value)]:
            if isinstance(v, dict):
                row.update({f"δ={lag}": num(x) for lag, x in v.items()})
            elif isinstance(v, list):
                row.update({f"δ={lag}": num(x) for lag, x in zip(lags, v)})
            else:
                row[key.replace("_", " ")] = num(v)
        rows.append(row)
    return rows


BASELINE_NOTE = (
    "In text, recalling x_(t−δ) is partly inference: the symbols after it imply much of it. The "
    "backward-context baseline knows only those (a Kneser-Ney n-gram of the reversed training text, "
    "scored on the signature's own test positions); the lift, signature minus baseline, is the recall "
    "the later symbols cannot explain (red: the state recalls more, blue: the later symbols imply more)."
)
CONDITIONAL_NOTE = (
    "In bits rather than recall: how much the state adds to the backward-context baseline's prediction of "
    "x_(t−δ), CE(baseline) − CE(baseline + state) per test position, from a decoder that reads the state on "
    "top of the baseline (given:<state>), on the same test positions. About 0 means the later symbols explain "
    "the recall; above 0, the state holds x_(t−δ) itself. Intervals: 95 %, block bootstrap over the test "
    "stream plus the spread over probe seeds."
)


# -------------------------------------------------------------------------------------- pages
def _intro(page: Page, what: str, paths: list[Path]) -> None:
    page.heading(page.title, 1)
    where = ", ".join(f"<code>{html.escape(str(p.resolve()))}</code>" for p in paths)
    page.markup(f"<p>{html.escape(what)} {where}</p>")
    page.text(HOW_TO_READ)


def _signature_section(page: Page, name: str, sig: Signature, heading: str) -> None:
    page.heading(heading)
    page.text("Overall recall (%) of each probed state at a few lags, and the majority-class rate:")
    page.table(recall_rows({name: sig}))
    floor = sig.meta.get("noise_floor")
    if floor:
        page.text(
            "Noise floor: the distance between this signature and a probe re-run that differs only in its "
            "seed; two signatures closer than this cannot be told apart."
        )
        page.table(
            [
                {"state": s, "distance": round(d, 4), "low": round(lo, 4), "high": round(hi, 4)}
                for s, (d, lo, hi) in floor.items()
            ]
        )
    page.heading("Recall per symbol and lag", 3)
    page.text(f"{HEATMAP_NOTE.format(min_support=sig.min_support)} {STRIPS_NOTE}")
    for state in sig.real_states:
        page.figure(
            f"{name}/heatmap/{state}", to_plotly(specs.signature_map(sig, state)), f"{state}: recall (%) of x_(t−δ)."
        )
    page.heading("Overall recall per lag, with controls", 3)
    page.figure(f"{name}/marginal", to_plotly(specs.recall_curves({name: sig}, prefixed=False)), CURVES_NOTE)
    if sig.given_states:
        _conditional_section(page, name, sig)


def _conditional_section(page: Page, name: str, sig: Signature) -> None:
    """Memory beyond inference of a signature with ``given:`` decoders: bits per lag with their
    intervals, each real state's total, and its bits per symbol and lag."""
    spec = specs.conditional(sig)
    page.heading("Memory beyond inference", 3)
    page.text(CONDITIONAL_NOTE)
    page.text(" ".join(f"{specs.total_text(s, *t)}." for s, t in spec.totals.items() if s in sig.real_states))
    page.figure(
        f"{name}/conditional/bits",
        to_plotly(spec.curves),
        "Bits of x_(t−δ) per test position that each state adds to the backward-context baseline, per lag, "
        "with the 95 % interval as a band; dash-dotted: the shuffled control, which must sit at 0.",
    )
    for heatmap in spec.maps:
        page.figure(
            f"{name}/conditional/map/{heatmap.name}",
            to_plotly(heatmap),
            f"{heatmap.name}: bits beyond inference per true symbol x_(t−δ) and lag, on one symmetric scale for "
            "all states (red: the state adds bits, blue: the decoder does worse than the baseline alone); grey: "
            "too few test positions.",
        )


def _gradient_section(page: Page, grad: GradientLike) -> None:
    page.heading("State gradients")
    page.text(
        "How strongly each state at t still depends on the input at t−δ: the Jacobian ∂s_t/∂e_(t−δ) of the "
        "state with respect to the input embedding, in whitened embedding coordinates (gradients.npz)."
    )
    page.figure(
        "gradients/decay",
        gradient_decay(grad),
        "Sum of the top-5 singular values of the position-averaged whitened Jacobian per lag (log scale): "
        "a memory-decay curve to read beside the overall recall.",
    )
    page.figure(
        "gradients/spectra",
        singular_spectra(grad),
        "Singular value spectrum of the position-averaged whitened Jacobian, one curve per lag (light: "
        "long lags): how many input directions the state keeps, and how fast each fades.",
    )
    for state in grad.states:
        page.figure(
            f"gradients/map/{state}",
            gradient_map(grad, state),
            f"{state}: mean whitened Jacobian norm per input symbol at t−δ (log10 colour scale), laid out "
            "like the signature; grey: too few positions.",
        )
    correlation = grad.meta.get("correlation")
    if correlation:
        page.text(
            "Spearman's ρ between gradient memory and probe recall: per lag across symbols (δ=…), and across "
            "lags of the mean gradient norm vs overall recall."
        )
        page.table(correlation_rows(correlation, list(grad.lags)))


def _baseline_section(page: Page, sig: Signature, base: Signature) -> None:
    """The backward-context baseline of ``sig``: its recall per lag, its heatmap and the lift map of
    every real state (a menu picks the state)."""
    state = base.states[0]
    page.heading("What the later symbols alone imply")
    page.text(BASELINE_NOTE)
    page.table(recall_rows({"backward context": base}))
    page.figure(
        "baseline/heatmap", to_plotly(specs.signature_map(base, state)), f"{base.provenance()}: recall (%) of x_(t−δ)."
    )
    lifts = [specs.difference(sig, base, s, state, (s, "later symbols")) for s in sig.real_states]
    page.figure("baseline/lift map", difference_menu(lifts), "Lift: signature − baseline, in points.")


def _run_page(run: RunResults) -> Page:
    page = Page(f"memsig report — {run.run_dir.name}")
    _intro(page, f"{run.kind.capitalize()} run", [run.run_dir])
    first = next(iter(run.signatures.values()))
    page.heading("Model and data")
    page.table(_summary_rows(first, run))
    if run.train_result:
        page.text(
            f"Language-model scores of the train run ({run.train_dir}), for its tested checkpoint "
            f"{run.train_result.get('best_checkpoint')}:"
        )
        page.table(perplexity_rows(run.train_result))
    for key, what in (("model", "model configuration"), ("data", "data configuration"), ("probe", "probe settings")):
        if isinstance(first.meta.get(key), dict):
            page.table(settings_rows(first.meta[key]), details=f"Full {what}")
    for name, sig in run.signatures.items():
        _signature_section(page, name, sig, "Signature" if len(run.signatures) == 1 else f"Signature '{name}'")
    if run.baseline is not None:
        _baseline_section(page, first, run.baseline)
    if run.gradients is not None:
        _gradient_section(page, run.gradients)
    return page


def study_page(study: Study) -> Page:
    """The interactive page of a :class:`~memsig.report.study.Study` (a multirun or signature files):
    models, recall, memory against perplexity, signatures side by side, difference maps and distances."""
    sigs = study.signatures
    page = Page(study.title)
    _intro(page, f"{study.origin}:", study.paths)
    page.heading("Models")
    page.table(study.model_rows())
    page.table(study.signature_rows())
    page.heading("Overall recall per lag")
    page.table(study.recall_rows())
    page.figure(
        "study/marginal",
        to_plotly(study.curves()),
        "Overall recall per lag of every model and probed state; dotted grey: the majority class.",
    )
    memory = study.memory_rows()
    if memory:
        page.heading("Memory against perplexity")
        page.table(memory)
        page.figure(
            "study/memory",
            to_plotly(study.memory()),
            f"{study.memory().ylabel}, each model's compared state, against its test perplexity.",
        )
    page.heading("Signatures side by side")
    page.text(
        f"{HEATMAP_NOTE.format(min_support=max(s.min_support for s in sigs.values()))} Shown: the compared "
        "state of each model (its first probed state unless another is asked for), on one colour scale."
    )
    page.figure("study/side_by_side", to_plotly(study.panels()), "Per-symbol recall (%), one panel per model.")
    if len(sigs) > 1:
        page.heading("Differences")
        page.figure(
            "study/differences",
            difference_menu(study.differences()),
            "Recall of the first model minus the second, in points, for the pair picked in the menu: red = "
            "the first recalls better, blue = the second; grey: too few test positions in either.",
        )
        page.heading("Signature distances")
        page.text(
            "Mean |Δ recall| over the (lag, symbol) cells supported in both signatures (0 = identical, "
            f"1 = opposite), with a 95 % bootstrap interval ({study.n_boot} resamples of the test positions), "
            "on the lags both have."
        )
        try:
            page.table(study.distance_rows())
        except ValueError as err:  # e.g. signatures of different symbol sets
            page.text(f"No distances: {err}")
    return page
