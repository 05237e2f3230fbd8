"""One self-contained interactive HTML page per probe run, train run or multirun.

:func:`write_report` writes ``report.html`` into the run (or sweep) dir: model and data summary,
the signatures as interactive heatmaps, recall curves with their controls, state gradients when
the run has them, and for a multirun the models, side-by-side signatures, difference maps and
distances. plotly.js is inlined, so the page opens offline. :func:`log_report` puts it on W&B.
Command line: ``python report.py <dir>`` or ``python -m memsig.report <dir>``.
"""

from memsig.report.build import build_report, write_report
from memsig.report.sources import ReportError
from memsig.report.wandb_log import log_report

__all__ = ["ReportError", "build_report", "log_report", "write_report"]
