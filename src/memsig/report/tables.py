"""Rows of dicts as CSV, markdown and HTML tables: one column per key that any row has, in first-seen order."""

from __future__ import annotations

import csv
import html
import io
from typing import Any


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """``rows`` as CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_keys(rows))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``rows`` as a markdown table (an empty cell where a row lacks a key or holds None)."""
    keys = _keys(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_text(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: list[dict[str, Any]]) -> str:
    """``rows`` as an HTML ``<table>`` (text escaped)."""
    keys = _keys(rows)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(r.get(k)))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
