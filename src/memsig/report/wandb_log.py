"""Put a written report on W&B: the page as ``wandb.Html``, each of its figures as ``wandb.Plotly``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from memsig.report.build import REPORT
from memsig.report.page import figures_of


def _run_of(target: Any) -> Any:
    """The W&B run behind ``target`` (a Lightning ``WandbLogger``, a wandb run, or a list of loggers), else None."""
    if target is None:
        return None
    if isinstance(target, (list, tuple)):
        return next((run for run in map(_run_of, target) if run is not None), None)
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(target, WandbLogger):
        return target.experiment
    wandb = sys.modules.get("wandb")  # a wandb run exists only if wandb was imported
    return target if wandb is not None and isinstance(target, wandb.sdk.wandb_run.Run) else None


def log_report(target: Any, path: str | Path) -> bool:
    """Log the report at ``path`` (``report.html`` or the dir holding it) to the W&B run of ``target``.

    ``target``: a Lightning ``WandbLogger``, a wandb run, or the trainer's list of loggers; anything
    else (None, a CSV logger) logs nothing. Logs ``report/page`` (the whole page, ``wandb.Html``) and
    ``report/<figure key>`` (``wandb.Plotly``, the figures exactly as on the page). Returns whether it logged.
    """
    run = _run_of(target)
    if run is None:
        return False
    import wandb

    page = Path(path)
    page = page / REPORT if page.is_dir() else page
    text = page.read_text(encoding="utf-8")
    run.log(
        {
            "report/page": wandb.Html(text, inject=False),
            **{f"report/{key}": wandb.Plotly(fig) for key, fig in figures_of(text).items()},
        }
    )
    return True
