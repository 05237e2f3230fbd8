"""One self-contained interactive HTML page per probe run, train run or multirun; a study's static files.

:func:`write_report` writes ``report.html`` into the run (or sweep) dir: model and data summary,
the signatures as interactive heatmaps, recall curves with their controls, state gradients when
the run has them, and for a multirun the models, side-by-side signatures, difference maps and
distances. Several models — a multirun or signature files — are a :class:`Study`, rendered as that
page (:func:`study_page`) or as static files (:func:`write_static`: figures, CSV, markdown).
plotly.js is inlined, so the page opens offline. :func:`log_report` puts it on W&B.
Command line: ``python report.py <dir>``, ``python report.py a.npz b.npz`` or ``python -m memsig.report``.
"""

from memsig.report.build import build_report, study_page, write_page, write_report
from memsig.report.sources import ReportError
from memsig.report.static import write_static
from memsig.report.study import Study, StudySettings
from memsig.report.wandb_log import log_report

__all__ = [
    "ReportError",
    "Study",
    "StudySettings",
    "build_report",
    "log_report",
    "study_page",
    "write_page",
    "write_report",
    "write_static",
]
