"""A :class:`~memsig.report.study.Study` as static files, written into one folder:

- ``marginal_recall``: overall recall per lag of every model and probed state in one figure;
- ``side_by_side``: each signature's per-symbol recall (its compared state) on one scale;
- ``difference_<a>_vs_<b>``: the difference map of each of the study's pairs (red = a better);
- ``memory_vs_perplexity``: each model's memory in bits (beyond inference where every signature
  has it) against its test perplexity, where its train run is known;
- ``models.csv``, ``recall.csv``, ``memory.csv`` and ``distances.csv``: perplexities, parameters,
  wall times; overall recall at a few lags; the memory figure's points; pairwise signature
  distances with bootstrap intervals and the lags each was measured on (and those left out: in one
  signature only);
- ``report.md`` and ``report.html``: all of it on one page (static images).

The figures are drawn with matplotlib from the same specifications as the interactive page's
(:meth:`Study.curves`, :meth:`Study.panels`, :meth:`Study.differences`). The distances are measured
first: signatures that share no supported cell stop it before anything is written.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from memsig.analysis.distance import shared_lags
from memsig.data.io import atomic_write_bytes
from memsig.plots import save_figure, to_matplotlib
from memsig.report.study import Study
from memsig.report.tables import csv_bytes, html_table, markdown_table

FOLDER = "report"  # a multirun's static files: <sweep dir>/report/
DISTANCES = "Signature distances (mean |Δ recall| over shared cells, 95 % bootstrap)"
STYLE = "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"


def _stem(a: str, b: str) -> str:
    """The file stem of the difference map of ``a`` and ``b`` (no spaces or brackets)."""
    return f"difference_{a}_vs_{b}".replace(" ", "_").replace("[", "").replace("]", "")


def write_static(study: Study, out: str | Path, formats: Sequence[str] = ("png", "svg")) -> Path:
    """Write ``study`` into ``out`` (see module docstring) and print its tables and distances; the
    path of its ``report.html``. ValueError, before anything is written, where two signatures share
    no supported (lag, symbol) cell."""
    out = Path(out)
    distances = study.distance_rows()
    models, recall = study.model_rows(), study.recall_rows()
    sections: list[tuple[str, list[dict] | str]] = [  # (heading, rows of a table or the name of an image)
        ("Models", models),
        ("Signatures", study.signature_rows()),
        ("Marginal recall (%) per lag", recall),
    ]
    atomic_write_bytes(out / "models.csv", csv_bytes(models))
    atomic_write_bytes(out / "recall.csv", csv_bytes(recall))
    save_figure(to_matplotlib(study.curves()), out / "marginal_recall", tuple(formats))
    sections.append(("Marginal recall per lag of every model and probed state", "marginal_recall.png"))
    save_figure(to_matplotlib(study.panels()), out / "side_by_side", tuple(formats))
    sections.append(("Per-symbol recall (the compared state of each signature), one colour scale", "side_by_side.png"))
    memory = study.memory_rows()
    if memory:
        atomic_write_bytes(out / "memory.csv", csv_bytes(memory))
        save_figure(to_matplotlib(study.memory()), out / "memory_vs_perplexity", tuple(formats))
        sections += [("Memory against perplexity", memory), ("Memory against perplexity", "memory_vs_perplexity.png")]
    for (a, b), spec in zip(study.pairs, study.differences()):
        save_figure(to_matplotlib(spec), out / _stem(a, b), tuple(formats))
        sections.append((f"{a} − {b}: red = {a} recalls better, blue = {b} better", f"{_stem(a, b)}.png"))
    if distances:
        atomic_write_bytes(out / "distances.csv", csv_bytes(distances))
        sections.append((DISTANCES, distances))
    where = ", ".join(str(p.resolve()) for p in study.paths)
    md = [f"# {study.title}", "", f"{study.origin}: `{where}`", ""]
    page = [
        f"<h1>{html.escape(study.title)}</h1>",
        f"<p>{html.escape(study.origin)}: <code>{html.escape(where)}</code></p>",
    ]
    for heading, content in sections:
        md += [f"## {heading}", ""]
        page.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, str):
            md += [f"![{heading}]({content})", ""]
            page.append(f'<img src="{html.escape(content)}" style="max-width:100%">')
        else:
            md += [markdown_table(content), ""]
            page.append(html_table(content))
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    atomic_write_bytes(out / "report.html", f"<!doctype html><meta charset='utf-8'>{STYLE}{''.join(page)}".encode())
    print(f"study report: {out / 'report.html'}\n{markdown_table(models)}\n{markdown_table(recall)}", flush=True)
    for (a, b), (d, lo, hi) in study.distances.items():
        print(f"  {a} vs {b}: {d:.4f}  [{lo:.4f}, {hi:.4f}]")
        used, left_out = shared_lags(study.signatures[a], study.signatures[b])
        if left_out:
            print(f"    note: measured on the lags both have, {used}; lags {left_out} are in only one and left out")
    return out / "report.html"
