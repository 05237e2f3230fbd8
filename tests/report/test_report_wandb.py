"""The report on W&B (offline): the page as wandb.Html, its figures as wandb.Plotly."""

from __future__ import annotations

from pathlib import Path

import pytest

from memsig.report import log_report, write_report
from memsig.report.page import figures_of

from conftest import wandb_media_keys
from report_helpers import write_probe_run, write_train_run


@pytest.fixture
def offline(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_log_report_to_an_offline_run(offline, tmp_path: Path) -> None:
    import wandb

    page = write_report(write_probe_run(tmp_path))
    keys = list(figures_of(page.read_text()))
    run = wandb.init(project="memsig-test", dir=tmp_path, mode="offline")
    try:
        assert log_report(run, page) is True
    finally:
        run.finish()
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    media = folder / "files" / "media"
    (html,) = (media / "html").rglob("*.html")
    assert html.read_text() == page.read_text()
    assert len(list((media / "plotly").rglob("*.plotly.json"))) == len(keys)
    assert wandb_media_keys(folder) == {"report/page", *(f"report/{k}" for k in keys)}


def test_log_report_through_the_lightning_loggers(offline, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    train_run = write_train_run(tmp_path / "train")
    write_report(train_run)
    csv = CSVLogger(tmp_path / "csv")
    assert log_report(None, train_run) is False
    assert log_report(csv, train_run) is False  # not W&B: nothing logged, no error
    logger = WandbLogger(project="memsig-test", save_dir=str(tmp_path), offline=True)
    try:
        assert log_report([csv, logger], train_run) is True  # the dir holding report.html
    finally:
        logger.experiment.finish()
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    assert {"report/page", "report/main/heatmap/layer1.c"} <= wandb_media_keys(folder)
