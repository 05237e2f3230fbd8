"""The Hydra callback that reports a study when its multirun ends (experiments add it).

:class:`StudyReport` writes the static files (``<sweep dir>/report/``,
:func:`memsig.report.study.write_static_report`) and the interactive page
(``<sweep dir>/report.html``, :func:`memsig.report.write_report`) with one set of settings.
``python report.py <sweep dir> --static`` does the same by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from memsig.report import write_report
from memsig.report.study import StudySettings, write_static_report


class StudyReport(Callback):
    """Hydra callback: the static files and the interactive page of the sweep dir when a multirun ends."""

    def __init__(
        self,
        title: str = "memsig study",
        label: Sequence[str] | None = None,
        select_over: Sequence[str] = ("model.dropout",),
        differences: Sequence[Sequence[str]] = (),
        formats: Sequence[str] = ("png", "svg"),
    ) -> None:
        self.study = StudySettings(
            title, list(label) if label else None, list(select_over), [list(p) for p in differences]
        )
        self.formats = list(formats)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_static_report(config.hydra.sweep.dir, self.study, formats=self.formats)
        write_report(config.hydra.sweep.dir, study=self.study)
