"""Collect a multirun's results into tables, picking the best value of a swept option.

:class:`~memsig.tasks.hydra_callbacks.SweepSummary` (``hydra.callbacks``): when a multirun ends it
reads every job's ``metrics.json`` and writes ``summary.csv`` (one row per job) and
``best.csv`` (for every combination of the other swept options, the job with the lowest
``metric`` over the ``select_over`` options — e.g. the best LM dropout per model size,
chosen on dev perplexity as the paper does). The same tables come from
``python -m memsig.tasks.sweep <multirun dir>``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from memsig.data.io import atomic_write_bytes
from memsig.report.study import summarize
from memsig.report.tables import csv_bytes

log = logging.getLogger(__name__)


def write_summary(
    sweep_dir: str | Path, metric: str = "val/loss", select_over: tuple[str, ...] = ("model.dropout",)
) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``best.csv`` into ``sweep_dir``; return the best rows."""
    rows, best = summarize(sweep_dir, metric, select_over)
    if not rows:
        log.warning("no metrics.json under %s: nothing to summarise", sweep_dir)
        return []
    atomic_write_bytes(Path(sweep_dir) / "summary.csv", csv_bytes(rows))
    atomic_write_bytes(Path(sweep_dir) / "best.csv", csv_bytes(best))
    shown = [k for k in best[0] if k not in ("job", "best_checkpoint") and "/" not in k] + [metric, "test/ppl"]
    print(f"best by {metric} over {', '.join(select_over)} ({len(rows)} jobs, tables in {sweep_dir}):")
    print("  ".join(f"{k:>14}" for k in ["job", *shown]))
    for r in best:
        print("  ".join(f"{r.get(k, '')!s:>14}" for k in ["job", *shown]))
    return best


if __name__ == "__main__":
    write_summary(sys.argv[1], *(sys.argv[2:3] or ["val/loss"]))
