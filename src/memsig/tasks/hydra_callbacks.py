"""The Hydra callbacks of memsig's entry points (``hydra.callbacks`` in ``conf/``).

- :class:`RunDirCheck`: before a run (or sweep) starts, its dir can be written (:mod:`memsig.tasks.rundir`).
- :class:`SweepSummary`: when a multirun ends, ``summary.csv`` and ``best.csv`` (:mod:`memsig.tasks.sweep`).
- :class:`StudyReport`: when a study's multirun ends, its :class:`~memsig.report.Study`, rendered as
  static files and as the interactive page, with one set of settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from memsig.report import Study, StudySettings, study_page, write_page, write_static
from memsig.report.build import REPORT
from memsig.report.static import FOLDER
from memsig.tasks.rundir import RunDirError, check_writable, exit_with
from memsig.tasks.sweep import write_summary


class RunDirCheck(Callback):
    """Hydra callback: stop with a message, before Hydra opens its log file there, when the run
    dir (``-m``: the sweep dir) cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        try:
            folder = Path(str(OmegaConf.select(config, key, throw_on_resolution_failure=True))).absolute()
        except OmegaConfBaseException:
            return  # a dir named by run-time values: its job checks it when claiming it
        try:
            check_writable(folder)
        except RunDirError as err:
            exit_with(err)


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when a multirun ends."""

    def __init__(self, metric: str = "val/loss", select_over: list[str] | tuple[str, ...] = ("model.dropout",)) -> None:
        self.metric, self.select_over = metric, tuple(select_over)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(config.hydra.sweep.dir, self.metric, self.select_over)


class StudyReport(Callback):
    """Hydra callback: the static files and the interactive page of the sweep dir when a multirun ends.

    Its options are :class:`~memsig.report.study.StudySettings`' (``report.py``'s flags) and the
    static figures' ``formats``.
    """

    def __init__(
        self,
        title: str | None = None,
        label: Sequence[str] | None = None,
        select_over: Sequence[str] = ("model.dropout",),
        differences: Sequence[Sequence[str]] = (),
        state: str | None = None,
        n_boot: int = StudySettings.n_boot,
        formats: Sequence[str] = ("png", "svg"),
    ) -> None:
        self.settings = StudySettings(
            title, list(label) if label else None, list(select_over), [list(p) for p in differences], state, n_boot
        )
        self.formats = list(formats)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        study = Study.from_sweep(sweep_dir, self.settings)
        write_static(study, sweep_dir / FOLDER, self.formats)
        write_page(study_page(study), sweep_dir / REPORT)
