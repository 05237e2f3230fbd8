"""A self-contained HTML page: headings, text, tables and plotly figures, plotly.js inlined once.

Each figure is a ``<div class="memsig-plot">`` plus its JSON in a
``<script type="application/json" class="memsig-plot-data">`` block; one small script at the end
draws them all with ``Plotly.newPlot``. The page references nothing outside itself, so it opens
offline; :func:`figures_of` reads the figures back from a written page (for W&B).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from memsig.report.tables import html_table

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fff}
main{max-width:1200px;margin:0 auto;padding:1em 2em 4em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.5em}p.note,figcaption{color:#555;font-size:.92em;max-width:60em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#f4f2f8}
code{background:#f4f4f4;padding:0 3px;word-break:break-all}
figure{margin:1em 0}details{margin:.5em 0}summary{cursor:pointer;color:#54278f}
"""
RENDER = """
for (const data of document.querySelectorAll("script.memsig-plot-data")) {
  const spec = JSON.parse(data.textContent);
  Plotly.newPlot(data.dataset.for, spec.data, spec.layout, {responsive: true, displaylogo: false});
}
"""
_DATA = re.compile(
    r'<script type="application/json" class="memsig-plot-data" data-for="[^"]*" data-key="([^"]*)">'
    r"(.*?)</script>",
    re.DOTALL,
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


@dataclass
class Page:
    """An HTML page under construction: blocks of markup and the figures it shows (key -> figure)."""

    title: str
    blocks: list[str] = field(default_factory=list)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    anchors: dict[str, int] = field(default_factory=dict)  # heading anchor -> times used

    def heading(self, text: str, level: int = 2) -> None:
        """A heading (``level`` 1–4) with an anchor derived from its text (numbered when repeated)."""
        anchor = _slug(text)
        self.anchors[anchor] = seen = self.anchors.get(anchor, 0) + 1
        anchor = f"{anchor}-{seen}" if seen > 1 else anchor
        self.blocks.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')

    def text(self, text: str) -> None:
        """A paragraph of explanation (escaped; smaller, grey)."""
        self.blocks.append(f'<p class="note">{html.escape(text)}</p>')

    def markup(self, markup: str) -> None:
        """Raw HTML (the caller escapes what it inserts)."""
        self.blocks.append(markup)

    def table(self, rows: list[dict[str, Any]], details: str | None = None) -> None:
        """A table of ``rows`` (columns: their keys); folded under a ``details`` summary line if given."""
        if not rows:
            return
        table = html_table(rows)
        self.blocks.append(
            table if details is None else f"<details><summary>{html.escape(details)}</summary>{table}</details>"
        )

    def figure(self, key: str, fig: go.Figure, caption: str) -> None:
        """A plotly figure with a caption; ``key`` names it (unique on the page, also its W&B key)."""
        if key in self.figures:
            raise ValueError(f"figure key {key!r} used twice on the page")
        self.figures[key] = fig
        div = f"fig-{len(self.figures)}-{_slug(key)}"
        spec = fig.to_json().replace("<", "\\u003c")  # no "</script>" inside the block; still the same JSON
        self.blocks.append(
            f'<figure><div id="{div}" class="memsig-plot"></div>'
            f'<script type="application/json" class="memsig-plot-data" data-for="{div}" '
            f'data-key="{html.escape(key)}">{spec}</script>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        """The whole page: one document with plotly.js, the style, the blocks and the drawing script."""
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style>\n"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n'
            f"<body><main>\n" + "\n".join(self.blocks) + f"\n</main><script>{RENDER}</script></body></html>\n"
        )


def figures_of(page: str) -> dict[str, go.Figure]:
    """The figures of a page written by :meth:`Page.render` (key -> figure), in page order."""
    return {html.unescape(key): pio.from_json(spec) for key, spec in _DATA.findall(page)}
