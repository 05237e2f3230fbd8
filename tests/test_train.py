"""The train task end to end: fast_dev_run, a real short run, checkpoints, loggers, sweeps."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memsig.data.io import CorpusError
from memsig.data.text import unigram_entropy
from memsig.models import CharLM, CheckpointError, load_model
from memsig.resolvers import PROJECT_ROOT
from memsig.tasks.train import train

from conftest import TINY_RUN, compose_cfg


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fast_dev_run(cell, tmp_path: Path):
    cfg = compose_cfg(["debug=fdr", f"model={cell}", "data.max_chars=20000", "model.hidden_size=32"], tmp_path)
    result = train(cfg)
    assert {"train/loss", "val/loss", "test/loss", "test/ppl"} <= set(result["metrics"])
    assert result["best_checkpoint"] is None  # fast_dev_run writes no checkpoint


def test_short_run_learns_beyond_unigram(trained_lm):
    result, cfg = trained_lm["result"], trained_lm["cfg"]
    import hydra

    dm = hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))
    h_unigram = unigram_entropy(dm.ids("dev"), len(dm.vocab))
    val = result["metrics"]["val/loss"]
    assert val < h_unigram - 0.4, f"val loss {val:.3f} not clearly below the unigram entropy {h_unigram:.3f}"
    m = result["metrics"]
    assert m["test/ppl"] == pytest.approx(torch.tensor(m["test/loss"]).exp().item(), rel=1e-5)
    assert m["test/bpc"] == pytest.approx(m["test/loss"] / 0.6931471805599453, rel=1e-5)


def test_run_dir_has_checkpoints_logs_and_metrics(trained_lm):
    out, result = trained_lm["dir"], trained_lm["result"]
    assert Path(result["best_checkpoint"]).is_file() and Path(result["last_checkpoint"]).name == "last.ckpt"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["test/loss"] == pytest.approx(result["metrics"]["test/loss"])
    rows = list(csv.DictReader(next(out.glob("csv/version_*/metrics.csv")).read_text().splitlines()))
    assert any(r.get("val/loss") for r in rows) and any(r.get("train/loss") for r in rows)


def test_save_load_gives_identical_logits_and_metrics(trained_lm, tmp_path: Path):
    import hydra
    import lightning as L

    best = trained_lm["result"]["best_checkpoint"]
    a, b = load_model(best, expected=CharLM), CharLM.load_from_checkpoint(best).eval()
    x = torch.randint(0, len(a.vocab), (3, 40))
    assert torch.equal(a(x)[0], b(x)[0])
    cfg = trained_lm["cfg"]
    dm = hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(a, datamodule=dm, verbose=False)
    assert metrics["test/loss"] == pytest.approx(trained_lm["result"]["metrics"]["test/loss"], abs=1e-5)


def test_resume_continues_and_rejects_another_model(trained_lm, tmp_path: Path):
    last = trained_lm["result"]["last_checkpoint"]
    steps_before = torch.load(last, weights_only=True)["global_step"]
    cfg = compose_cfg([*TINY_RUN, f"ckpt_path={last}", "trainer.max_epochs=4", "test=false"], tmp_path / "resumed")
    resumed = train(cfg)
    steps_after = torch.load(resumed["last_checkpoint"], weights_only=True)["global_step"]
    assert steps_after == steps_before * 4 // 3  # one more epoch, not four
    cfg = compose_cfg([*TINY_RUN, f"ckpt_path={last}", "model=gru"], tmp_path / "wrong")
    with pytest.raises(CheckpointError, match="cell='lstm' \\(checkpoint\\) vs 'gru'"):
        train(cfg)


def test_missing_corpus_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.txt"
    cfg = compose_cfg(["debug=fdr", f"data.corpus.path={missing}", "data.corpus.url=null"], tmp_path)
    with pytest.raises(CorpusError, match=f"{missing} does not exist"):
        train(cfg)


def test_wandb_logger_runs_offline(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(["debug=smoke", "logger=wandb", "callbacks=none", "data.max_chars=20000"], tmp_path)
    assert cfg.logger.wandb.offline is True
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    import wandb

    assert wandb.run is None  # finished in train()'s finally


def test_multirun_sweep_writes_summary(tmp_path: Path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        "debug=smoke",
        "callbacks=model_checkpoint",
        "data.max_chars=15000",
        "model.hidden_size=32",
        "model.dropout=0.0,0.3",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in sweep.glob("*/metrics.json") for p in [p.parent]) == ["0", "1"]
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["model.dropout"] for r in rows] == ["0.0", "0.3"]
    best = list(csv.DictReader((sweep / "best.csv").read_text().splitlines()))
    assert len(best) == 1 and float(best[0]["val/loss"]) == min(float(r["val/loss"]) for r in rows)
    assert "best by val/loss over model.dropout" in proc.stdout
