"""A study: every model of a multirun, collected once and rendered as static files or (through
:mod:`memsig.report.build`) the interactive page.

:func:`collect` reads every job's ``metrics.json`` and ``signatures/*.npz``, keeping the best job by
dev loss over ``select_over`` (e.g. the best dropout per model). :func:`write_static_report`
writes into ``<sweep dir>/report/``:

- ``marginal_recall``: marginal recall per lag of every model and probed state in one figure;
- ``side_by_side``: each model's per-symbol signature (first probed state) on one scale;
- ``difference_<a>_vs_<b>``: per-symbol difference maps for the requested pairs (red = a better);
- ``models.csv``, ``recall.csv`` and ``distances.csv``: perplexities, parameters, wall
  times; marginal recall at a few lags; pairwise signature distances with bootstrap intervals;
- ``report.md`` and ``report.html``: all of it on one page (static images).

A model is named by the values of its ``label`` overrides (default: every override that differs
between the jobs, but ``select_over``), e.g. ``gru-320``; extra signatures of a job (variants, the
n-gram's count table) are named ``<model> [<signature>]``. ``python report.py <sweep dir> --static``
writes both pages; the Hydra callback :class:`~memsig.tasks.hydra_callbacks.StudyReport` does when a
multirun ends.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memsig.analysis.distance import pairwise_distances
from memsig.data.io import atomic_write_bytes
from memsig.plots import difference_map, marginal_curves, save_figure, side_by_side
from memsig.probe.signature import Signature

log = logging.getLogger(__name__)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``key -> value`` of Hydra overrides (``+``/``~`` prefixes dropped)."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)


def summarize(
    sweep_dir: str | Path, metric: str = "val/loss", select_over: tuple[str, ...] = ("model.dropout",)
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of all jobs of a multirun (their ``metrics.json``) and the best row per group: for every
    combination of the other swept options, the job with the lowest ``metric`` over ``select_over``."""
    rows, swept = [], set()
    for f in sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        result = json.loads(f.read_text())
        overrides = parse_overrides(result["overrides"])
        swept.update(overrides)
        row: dict[str, Any] = {"job": f.parent.name, **overrides}
        row.update({k: round(v, 5) for k, v in sorted(result["metrics"].items())})
        row["best_checkpoint"] = result.get("best_checkpoint")
        rows.append(row)
    group_keys = [k for k in sorted(swept) if k not in select_over]
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r.get(k) for k in group_keys)
        score = r.get(metric, float("inf"))  # a job that never validated loses to any that did
        if key not in best or score < best[key].get(metric, float("inf")):
            best[key] = r
    return rows, list(best.values())


REPORT_LAGS = (1, 2, 4, 8, 16)  # marginal recall shown in the models table


@dataclass(frozen=True)
class StudySettings:
    """How a study names and compares its models, shared by its static and interactive pages
    (:class:`StudyReport`'s settings).

    title: the page title (None: the page's default); label: override keys that name a model
    (None: every override that differs between jobs); select_over: keep the best job by dev loss
    over these; differences: ``(a, b)`` model-name pairs for the difference maps (the interactive
    page's default: every pair).
    """

    title: str | None = None
    label: Sequence[str] | None = None
    select_over: Sequence[str] = ("model.dropout",)
    differences: Sequence[Sequence[str]] = ()


@dataclass
class Model:
    """One job of the study: its name, run dir, metrics and signatures (name -> Signature)."""

    name: str
    run_dir: Path
    metrics: dict[str, Any]
    params: int | None
    wall_time_s: float | None
    signatures: dict[str, Signature] = field(default_factory=dict)


def collect(
    sweep_dir: str | Path,
    label: Sequence[str] | None = None,
    select_over: Sequence[str] = ("model.dropout",),
    metric: str = "val/loss",
) -> list[Model]:
    """The study's models in job order (the best job per group over ``select_over``)."""
    sweep_dir = Path(sweep_dir)
    _, best = summarize(sweep_dir, metric, tuple(select_over))
    results = {row["job"]: json.loads((sweep_dir / row["job"] / "metrics.json").read_text()) for row in best}
    options = {job: parse_overrides(r["overrides"]) for job, r in results.items()}
    keys = (
        list(label)
        if label
        else [
            k
            for k in dict.fromkeys(k for o in options.values() for k in o)
            if k not in select_over and len({o.get(k) for o in options.values()}) > 1
        ]
    )  # overrides that tell jobs apart
    models = []
    for row in best:
        result, opts = results[row["job"]], options[row["job"]]
        name = "-".join(opts[k] for k in keys if k in opts) or row["job"]
        sigs = {k: Signature.load(p) for k, p in (result.get("signatures") or {}).items() if Path(p).is_file()}
        models.append(
            Model(
                name, sweep_dir / row["job"], result["metrics"], result.get("params"), result.get("wall_time_s"), sigs
            )
        )
    return models


def named_signatures(models: list[Model]) -> dict[str, Signature]:
    """Every signature of the study: ``<model>`` for main, ``<model> [<name>]`` for the others."""
    return {(m.name if k == "main" else f"{m.name} [{k}]"): s for m in models for k, s in m.signatures.items()}


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """``rows`` as CSV, one column per key that any row has."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def model_rows(models: list[Model]) -> list[dict[str, Any]]:
    """One row per model: parameters, perplexities (val, test, every ``eval/<corpus>``), wall time."""
    rows = []
    for m in models:
        row: dict[str, Any] = {"model": m.name, "params": m.params}
        for key in sorted(k for k in m.metrics if k.endswith("/ppl")):
            row[key.replace("/ppl", " ppl")] = round(m.metrics[key], 3)
        row["wall time (s)"] = m.wall_time_s
        rows.append(row)
    return rows


def recall_rows(sigs: dict[str, Signature]) -> list[dict[str, Any]]:
    """One row per (signature, probed real state): marginal recall (%) at :data:`REPORT_LAGS`."""
    return [
        {
            "signature": name,
            "state": state,
            **{
                f"δ={lag}": round(100 * float(sig.accuracy[sig.index(state), sig.lags.index(lag)]), 1)
                for lag in REPORT_LAGS
                if lag in sig.lags
            },
            "majority": round(100 * float(sig.majority_rate[0, 0]), 1),
        }
        for name, sig in sigs.items()
        for state in sig.real_states
    ]


def distance_rows(sigs: dict[str, Signature], states: dict[str, str], n_boot: int = 200) -> list[dict[str, Any]]:
    """One row per pair of ``sigs`` (``states``: the state compared of each): distance and 95 % bootstrap interval."""
    return [
        {"a": a, "b": b, "distance": round(d, 4), "low": round(lo, 4), "high": round(hi, 4)}
        for (a, b), (d, lo, hi) in pairwise_distances(sigs, states, n=n_boot).items()
    ]


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if r.get(k) is None else str(r[k]))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_static_report(
    sweep_dir: str | Path,
    study: StudySettings | None = None,
    formats: Sequence[str] = ("png", "svg"),
    n_boot: int = 200,
) -> Path:
    """Write ``<sweep_dir>/report/`` (see module docstring) as ``study`` names and compares its
    models; the path of its ``report.html``."""
    study = study or StudySettings()
    title, differences = study.title or "memsig study", study.differences
    out = Path(sweep_dir) / "report"
    models = collect(sweep_dir, study.label, study.select_over)
    if not models:
        raise FileNotFoundError(f"no finished jobs (metrics.json) under {sweep_dir}: nothing to report")
    sigs = named_signatures(models)
    first = {name: sig.real_states[0] for name, sig in sigs.items()}
    distances = distance_rows(sigs, first, n_boot) if len(sigs) > 1 else []  # no shared cell: raises, nothing written
    figures: list[tuple[str, str]] = []  # (caption, png name)
    rows, recall = model_rows(models), recall_rows(sigs)
    atomic_write_bytes(out / "models.csv", csv_bytes(rows))
    if recall:
        atomic_write_bytes(out / "recall.csv", csv_bytes(recall))
    if sigs:
        save_figure(
            marginal_curves(sigs, list(dict.fromkeys(s for sig in sigs.values() for s in sig.real_states))),
            out / "marginal_recall",
            tuple(formats),
        )
        figures.append(("Marginal recall per lag of every model and probed state", "marginal_recall.png"))
        save_figure(side_by_side(sigs, first), out / "side_by_side", tuple(formats))
        figures.append(
            ("Per-symbol recall (first probed state of each signature), one colour scale", "side_by_side.png")
        )
        for a, b in differences:
            if a not in sigs or b not in sigs:
                log.warning("difference %s vs %s: no such signatures (have %s)", a, b, sorted(sigs))
                continue
            stem = f"difference_{a}_vs_{b}".replace(" ", "_").replace("[", "").replace("]", "")
            save_figure(difference_map(sigs[a], sigs[b], first[a], first[b], labels=(a, b)), out / stem, tuple(formats))
            figures.append((f"{a} − {b}: red = {a} recalls better, blue = {b} better", f"{stem}.png"))
        if distances:
            atomic_write_bytes(out / "distances.csv", csv_bytes(distances))
    md = [
        f"# {title}",
        "",
        f"Sweep: `{Path(sweep_dir).resolve()}` ({len(models)} models)",
        "",
        "## Models",
        "",
        _markdown_table(rows),
        "",
    ]
    if recall:
        md += ["## Marginal recall (%) per lag", "", _markdown_table(recall), ""]
    page = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Sweep: <code>{html.escape(str(Path(sweep_dir).resolve()))}</code> ({len(models)} models)</p>",
        "<h2>Models</h2>",
        html_table(rows),
    ]
    if recall:
        page += ["<h2>Marginal recall (%) per lag</h2>", html_table(recall)]
    for caption, png in figures:
        md += [f"## {caption}", "", f"![{caption}]({png})", ""]
        page += [f"<h2>{html.escape(caption)}</h2>", f'<img src="{html.escape(png)}" style="max-width:100%">']
    if distances:
        md += [
            "## Signature distances (mean |Δ recall| over shared cells, 95 % bootstrap)",
            "",
            _markdown_table(distances),
            "",
        ]
        page += [
            "<h2>Signature distances (mean |Δ recall| over shared cells, 95 % bootstrap)</h2>",
            html_table(distances),
        ]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    style = "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
    atomic_write_bytes(out / "report.html", f"<!doctype html><meta charset='utf-8'>{style}{''.join(page)}".encode())
    print(
        f"study report: {out / 'report.html'}\n{_markdown_table(rows)}\n{_markdown_table(recall) if recall else ''}",
        flush=True,
    )
    return out / "report.html"


def add_study_arguments(ap: Any) -> None:
    """Add ``--title``, ``--label``, ``--select-over``, ``--difference`` (a study's settings) to a parser or group."""
    ap.add_argument("--title", help="page title")
    ap.add_argument("--label", nargs="+", help="override keys that name a model (default: the ones that differ)")
    ap.add_argument("--select-over", nargs="*", default=["model.dropout"], help="keep the best job over these")
    ap.add_argument(
        "--difference",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="a difference map A - B (model names as in the report); the page's default: every pair",
    )
