"""Data-parallel training and probing on CPU (``trainer=ddp_cpu``: 2 processes over gloo), end to end.

Each rank reads its own streams (``StreamBatches``: rank r takes streams r·B … (r+1)·B - 1 of
the split cut into 2·B) and carries its own recurrent state, so 2 ranks of half the batch read
the streams of a 1-rank run and, DDP averaging the ranks' gradients, take the same steps: the
two runs differ by rounding only. What rank 0 logs is over every rank's positions. The same
ranks started as the tasks of a Slurm job (``hydra/launcher=slurm``) train alike. Resuming a
killed 2-rank run: tests/test_resume.py. The MLP probe and the ridge preview on 2 ranks: at the end.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import hydra
import numpy as np
import pytest
from test_resume import DDP, _assert_same_run, _env, _probe_cmd, _run, _train_cmd

from memsig.models import CharLM, load_model
from memsig.models.delay_line import DelayLine
from memsig.probe import RidgeProbe
from memsig.probe.multihead import unconverged_heads
from memsig.probe.signature import Signature
from memsig.resolvers import PROJECT_ROOT
from memsig.vocab import Vocab

from conftest import TINY_RUN, compose_cfg, free_port, quiet_trainer

RUN = [*TINY_RUN, "trainer.max_epochs=2"]
# Rounding only (the sums of 2 ranks' gradients against those of one batch), grown over 2 epochs
# of 118 steps at lr 0.01; the loss of rank 0's half of the streams is ~0.03 nats off at step 19
FOLLOWS = 1e-4  # nats/char


def _logged(run_dir: Path) -> dict[tuple[str, int], float]:
    """``(metric, step) -> value`` of every train/loss and val/loss row of the run's CSV log."""
    rows = csv.DictReader(next(run_dir.glob("csv/version_0/metrics.csv")).read_text().splitlines())
    return {(k, int(r["step"])): float(r[k]) for r in rows for k in ("train/loss", "val/loss") if r.get(k)}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """``RUN`` on 2 ranks of half its batch each."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    _run(run_dir, *DDP, base=RUN)
    return run_dir


def test_two_ranks_of_half_the_batch_follow_the_one_rank_run(trained_lm: dict, ddp_run: Path):
    """The 1-rank run is ``TINY_RUN`` (3 epochs): its first 2 are those of ``RUN``."""
    one, two = _logged(trained_lm["dir"]), _logged(ddp_run)
    assert two.keys() <= one.keys() and sum(k == "val/loss" for k, _ in two) == 2  # the same steps
    gap = max(abs(one[k] - two[k]) for k in two)
    assert gap < FOLLOWS, f"2 ranks drift {gap:.2e} nats/char from 1 rank"


def test_rank_zero_logs_the_loss_over_the_whole_dev_and_test_sets(ddp_run: Path, tmp_path: Path):
    """The best val/loss and the test/loss rank 0 wrote are those of one process reading the
    2 ranks' streams together."""
    result = json.loads((ddp_run / "metrics.json").read_text())
    cfg = compose_cfg(RUN, tmp_path)  # the batch sizes of the 2 ranks together
    dm = hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))
    best = load_model(result["best_checkpoint"], expected=CharLM)
    trainer = quiet_trainer()
    ((val,), (test,)) = trainer.validate(best, datamodule=dm), trainer.test(best, datamodule=dm)
    assert result["best_val_loss"] == pytest.approx(val["val/loss"], rel=1e-6)
    assert result["metrics"]["test/loss"] == pytest.approx(test["test/loss"], rel=1e-6)


def test_slurm_tasks_train_as_the_ranks_lightning_starts(ddp_run: Path, tmp_path: Path):
    """``hydra/launcher=slurm`` run as the 2 tasks of a one-node Slurm job run it: each task started
    with the job's environment, which Lightning's SLURMEnvironment (set by the launcher config)
    reads for its rank, so Lightning starts no process. The run is ``ddp_run``, bit for bit."""
    run_dir = tmp_path / "run"
    cmd = _train_cmd(run_dir, *DDP, "hydra/launcher=slurm", base=RUN)
    job = {
        "SLURM_JOB_ID": "1",
        "SLURM_JOB_NAME": "memsig",
        "SLURM_NNODES": "1",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    logs = [tmp_path / f"task{k}.log" for k in range(2)]
    with ExitStack() as files:
        tasks = [
            subprocess.Popen(
                cmd,
                stdout=files.enter_context(log.open("w")),
                stderr=subprocess.STDOUT,
                env={**_env(), **job, "SLURM_PROCID": str(k), "SLURM_LOCALID": str(k)},
            )
            for k, log in enumerate(logs)
        ]
        try:
            codes = [t.wait(timeout=300) for t in tasks]
        finally:
            for t in tasks:
                if t.poll() is None:
                    t.kill()
                    t.wait()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    assert "SLURMEnvironment" in run_dir.joinpath(".hydra", "config.yaml").read_text()
    _assert_same_run(ddp_run, run_dir)


# ------------------------------------------------------------------- the probe on 2 ranks
# Every rank reads the same state cache and takes its share of each minibatch, dev check and test
# pass; DDP averages gradients that sum to the whole minibatch's, and the dev losses are summed over
# ranks, so the 2-rank probe takes 1-rank steps up to rounding. Rounding moves a head's stopping
# check by a check or two; measured 2026-12-02 on the tiny LM: recall at most 0.0018 apart (a
# given: head at δ = 2), 0.0003 on the real state. The bound is the one a converged probe trained
# on for twice its steps keeps (tests/probe/test_convergence.py).
PROBE_RANKS = ["probe.max_steps=2000", "probe.patience=2"]  # every head of PROBE converges
RECALL_GAP = 0.005


@pytest.fixture(scope="module")
def probes(trained_lm: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Signature]:
    """``probe.py`` (the MLP probe of ``PROBE``) on the tiny LM on 1 and on 2 ranks, each run
    building its own state cache (on 2 ranks: rank 0, while rank 1 waits)."""
    root = tmp_path_factory.mktemp("ddp_probe")
    sigs = {}
    for ranks, extra in ((1, []), (2, ["trainer=ddp_cpu"])):
        run_dir = root / f"ranks{ranks}"
        cache = f"paths.cache_dir={run_dir / 'cache'}"
        proc = subprocess.run(
            _probe_cmd(str(trained_lm["dir"]), run_dir, cache, *PROBE_RANKS, *extra),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ranks == 1 or f"Starting with {ranks} processes" in proc.stderr + proc.stdout
        sigs[ranks] = Signature.load(run_dir / "signature.npz")
    return sigs


def test_two_rank_probe_measures_the_one_rank_signature(probes: dict[int, Signature]):
    """The same test positions, every head converged on both (a head stopped on one rank only
    would leave the other waiting in DDP's gradient reduction), recall within ``RECALL_GAP``."""
    one, two = probes[1], probes[2]
    assert one.states == two.states and not unconverged_heads(one) and not unconverged_heads(two)
    np.testing.assert_array_equal(one.confusion.sum(-1), two.confusion.sum(-1))
    gap = np.nanmax(np.abs(one.accuracy - two.accuracy))
    assert gap < RECALL_GAP, f"2 ranks recall {gap:.4f} away from 1 rank"


# ------------------------------------------------------------ the ridge preview on 2 ranks
RIDGE = {"lags": [1, 2, 3, 5], "features": 64}  # the delay line's window (k = 3) and beyond it
RIDGE_RANK = """
import sys
import numpy as np
sys.path[:0] = {paths!r}  # conftest's, as pytest's pythonpath
from conftest import RandomSymbols
from memsig.data.text import TextDataModule
from memsig.models.delay_line import DelayLine
from memsig.probe import RidgeProbe
from memsig.probe.quick import ranks
from memsig.vocab import Vocab

dm = TextDataModule(RandomSymbols(), Vocab(), batch_size=16, seq_len=64)
sig = RidgeProbe(**{options!r}).fit(DelayLine(Vocab(), k=3), dm)
assert ranks()[1] == 2, "the ranks did not join one process group"
np.save(sys.argv[1], sig.confusion)
"""


def test_two_rank_ridge_preview_counts_the_one_rank_confusion(random_dm, tmp_path: Path):
    """A depth-3 delay line over i.i.d. text through the ridge preview on the 2 ranks ``torchrun``
    would start (its environment, set here): every confusion count of the 1-process preview."""
    one = RidgeProbe(**RIDGE).fit(DelayLine(Vocab(), k=3), random_dm)
    code = RIDGE_RANK.format(paths=[str(PROJECT_ROOT / d) for d in ("tests", "scripts")], options=RIDGE)
    group = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    outs = [tmp_path / f"rank{k}.npy" for k in range(2)]
    tasks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**_env(), **group, "RANK": str(k), "LOCAL_RANK": str(k)},
        )
        for k, out in enumerate(outs)
    ]
    logs = [t.communicate(timeout=300)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], "\n".join(log[-3000:] for log in logs)
    for out in outs:
        np.testing.assert_array_equal(np.load(out), one.confusion)
