"""Data-parallel training on CPU (``trainer=ddp_cpu``: 2 processes over gloo), end to end.

Each rank reads its own streams (``StreamBatches``: rank r takes streams r·B … (r+1)·B - 1 of
the split cut into 2·B) and carries its own recurrent state, so 2 ranks of 8 streams read
the 16 streams of a 1-rank run of batch 16 and, DDP averaging the ranks' gradients, take the
same steps: the two runs differ by rounding only. What rank 0 logs is over every rank's
positions. Resuming a killed 2-rank run: tests/test_resume.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
import pytest

from memsig.models import CharLM, load_model

from conftest import TINY_RUN, compose_cfg, quiet_trainer
from test_resume import DDP, _run

# 3 epochs of 118 steps at lr 0.01: rounding grows along the way but stays far below the gap
# between the loss of all streams and that of rank 0's half (~0.03 nats at step 19)
FOLLOWS = 2e-3  # nats/char


def _logged(run_dir: Path) -> dict[tuple[str, int], float]:
    """``(metric, step) -> value`` of every train/loss and val/loss row of the run's CSV log."""
    rows = csv.DictReader(next(run_dir.glob("csv/version_0/metrics.csv")).read_text().splitlines())
    return {(k, int(r["step"])): float(r[k]) for r in rows for k in ("train/loss", "val/loss") if r.get(k)}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """``TINY_RUN`` on 2 ranks of half its batch each."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    _run(run_dir, *DDP, base=TINY_RUN)
    return run_dir


def test_two_ranks_of_half_the_batch_follow_the_one_rank_run(trained_lm: dict, ddp_run: Path):
    one, two = _logged(trained_lm["dir"]), _logged(ddp_run)
    assert one.keys() == two.keys() and sum(k == "val/loss" for k, _ in one) == 3  # the same steps
    gap = max(abs(one[k] - two[k]) for k in one)
    assert gap < FOLLOWS, f"2 ranks drift {gap:.2e} nats/char from 1 rank"


def test_rank_zero_logs_the_loss_over_the_whole_dev_and_test_sets(ddp_run: Path, tmp_path: Path):
    """val/loss (rank 0's log) and test/loss (metrics.json) are those of one process reading all
    16 streams, the 2 ranks' together."""
    logged = _logged(ddp_run)
    last_val = logged[max((k for k in logged if k[0] == "val/loss"), key=lambda k: k[1])]
    result = json.loads((ddp_run / "metrics.json").read_text())
    cfg = compose_cfg(TINY_RUN, tmp_path)  # batch 16: the 2 ranks' streams in one process
    dm = hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))
    trainer = quiet_trainer()
    (val,) = trainer.validate(load_model(ddp_run / "checkpoints" / "last.ckpt", expected=CharLM), datamodule=dm)
    (test,) = trainer.test(load_model(result["best_checkpoint"], expected=CharLM), datamodule=dm)
    assert last_val == pytest.approx(val["val/loss"], rel=1e-6)
    assert result["metrics"]["test/loss"] == pytest.approx(test["test/loss"], rel=1e-6)
