"""Resuming: a killed run goes on from last.ckpt mid-epoch exactly as if it had never stopped.

The pieces (loader position and order, torch's random state, the carried recurrent state,
atomic checkpoint files, ``resume: auto``) are tested alone, then end to end: ``train.py``
killed with SIGKILL and run again gives the same weights, bit for bit, as an uninterrupted
run (with dropout, so the random state matters too), on one process and on two DDP ranks.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from memsig.data.loader import ResumableLoader
from memsig.models.char_lm import CharLM
from memsig.probe.signature import Signature
from memsig.resolvers import PROJECT_ROOT
from memsig.tasks.checkpointing import AtomicCheckpointIO, AtomicCheckpoints
from memsig.tasks.train import resume_checkpoint
from memsig.vocab import Vocab

from conftest import TINY_RUN

# TINY_RUN for 2 epochs (118 windows each), last.ckpt every 10 steps, dropout on
RUN = [*TINY_RUN, "trainer.max_epochs=2", "model.dropout=0.1", "callbacks.last_checkpoint.every_n_train_steps=10"]
WINDOWS = 118
# 2 ranks, each of half the streams (batch sizes are per rank): RUN's streams and windows
DDP = ["trainer=ddp_cpu", "data.batch_size=8", "data.eval_batch_size=32"]


class Items(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


# ---------------------------------------------------------------------- the pieces
def test_loader_resumes_mid_pass_with_its_order_and_random_state():
    torch.manual_seed(0)
    loader = ResumableLoader(Items(10), shuffle=True)
    loader.sampler.set_epoch(3)
    batches = iter(loader)
    first = [next(batches) for _ in range(4)]
    state = loader.state_dict()
    after_save = torch.rand(3)  # what dropout would draw next
    rest = list(batches)
    assert sorted(first + rest) == list(range(10)) and first + rest != list(range(10))

    torch.manual_seed(99)  # a new process: another random state
    resumed = ResumableLoader(Items(10), shuffle=True)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)  # Lightning: the restored epoch
    assert len(resumed) == 10 and list(resumed) == rest
    assert torch.equal(torch.rand(3), after_save)
    resumed.sampler.set_epoch(4)  # the next epoch: a whole new pass
    assert sorted(resumed) == list(range(10))


def test_loader_state_from_an_epoch_end_starts_the_next_epoch_with_the_saved_random_state():
    torch.manual_seed(0)
    loader = ResumableLoader(Items(6), shuffle=True)
    list(loader)
    state = loader.state_dict()  # the end of epoch 0
    loader.sampler.set_epoch(1)
    next_epoch = list(loader)  # the uninterrupted run

    torch.manual_seed(99)
    resumed = ResumableLoader(Items(6), shuffle=True)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert list(resumed) == next_epoch


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carried_state_survives_a_checkpoint(cell):
    torch.manual_seed(0)
    lm = CharLM(Vocab(), cell=cell, num_layers=2, hidden_size=12, embedding_size=4)
    inputs = torch.randint(0, 31, (3, 10))
    batch = {"inputs": inputs, "targets": inputs, "mask": torch.ones(3, 10, dtype=torch.bool), "carry": False}
    lm._token_losses(batch, "train")
    ckpt = {"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams)}
    lm.on_save_checkpoint(ckpt)
    assert ckpt["carried_state"]["train"].shape == (1, 2 * (2 if cell == "lstm" else 1), 1, 3, 12)

    other = CharLM(Vocab(), cell=cell, num_layers=2, hidden_size=12, embedding_size=4)
    other.load_state_dict(ckpt["state_dict"])
    other.on_load_checkpoint(ckpt)
    nxt = {**batch, "carry": True}
    torch.testing.assert_close(other._token_losses(nxt, "train"), lm._token_losses(nxt, "train"), rtol=0, atol=0)


def test_checkpoint_files_are_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}

    def crash(fd: int) -> None:  # the job dies while the new file is being written
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left

    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    AtomicCheckpoints().setup(trainer, None, "fit")  # type: ignore[arg-type]
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_resume_auto_finds_last_ckpt_and_ckpt_path_wins(tmp_path: Path):
    trainer = L.Trainer(
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints")],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    cfg = OmegaConf.create({"ckpt_path": None, "resume": "auto"})
    assert resume_checkpoint(cfg, trainer) is None  # a fresh run dir
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_checkpoint(cfg, trainer) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": "/other.ckpt", "resume": "auto"}), trainer) == "/other.ckpt"
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": None, "resume": "never"}), trainer) is None
    with pytest.raises(ValueError, match="resume must be auto or never"):
        resume_checkpoint(OmegaConf.create({"ckpt_path": None, "resume": "yes"}), trainer)


# ------------------------------------------------------------------------ end to end
def _train_cmd(run_dir: Path, *extra: str, base: Sequence[str] = RUN) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "train.py"), *base, *extra, f"hydra.run.dir={run_dir}"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def _run(run_dir: Path, *extra: str, base: Sequence[str] = RUN) -> subprocess.CompletedProcess:
    """``train.py`` with ``base`` and ``extra`` overrides in ``run_dir``; it must succeed."""
    cmd = _train_cmd(run_dir, *extra, base=base)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_run(a: Path, b: Path, steps: int = 2 * WINDOWS) -> None:
    """Same checkpoints (names, steps, weights, optimizer state bit for bit) and metrics; ``steps`` in all."""
    names = sorted(p.name for p in (a / "checkpoints").glob("*.ckpt"))
    assert names == sorted(p.name for p in (b / "checkpoints").glob("*.ckpt"))
    for name in names:
        x, y = _load(a / "checkpoints" / name), _load(b / "checkpoints" / name)
        assert x["global_step"] == y["global_step"]
        for k, v in x["state_dict"].items():
            assert torch.equal(v, y["state_dict"][k]), f"{name}: {k} differs"
        for s, t in zip(x["optimizer_states"][0]["state"].values(), y["optimizer_states"][0]["state"].values()):
            assert all(torch.equal(s[k], t[k]) for k in s)
    assert _load(b / "checkpoints" / "last.ckpt")["global_step"] == steps
    assert (
        json.loads((a / "metrics.json").read_text())["metrics"]
        == json.loads((b / "metrics.json").read_text())["metrics"]
    )


def _kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 120) -> None:
    """Run ``cmd`` and SIGKILL it, with every process it started (DDP ranks), as soon as
    ``ready()`` holds (fails if it ended before)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True
    )
    try:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is it and its children
                break
            time.sleep(0.02)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _steps(run_dir: Path, version: int) -> list[int]:
    rows = csv.DictReader((run_dir / "csv" / f"version_{version}" / "metrics.csv").read_text().splitlines())
    return [int(r["step"]) for r in rows if r.get("train/loss")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted_ddp(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted_ddp") / "run"
    _run(run_dir, *DDP)
    return run_dir


@pytest.mark.parametrize("ranks", [1, 2])
def test_sigkilled_run_resumes_mid_epoch_bit_exactly(ranks: int, request: pytest.FixtureRequest, tmp_path: Path):
    """Also 2 DDP ranks (gloo on CPU): both processes killed, the same command goes on with each
    rank's carried state (gathered into the checkpoint) and ends as the 2-rank run that never stopped."""
    extra = DDP if ranks == 2 else []
    whole: Path = request.getfixturevalue("uninterrupted_ddp" if ranks == 2 else "uninterrupted")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    _kill_when(_train_cmd(run_dir, *extra), lambda: last.is_file() and _load(last)["global_step"] > WINDOWS + 5)
    killed = _load(last)
    loader = killed["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert killed["epoch"] == 1 and loader["epoch"] == 1 and 0 < loader["position"] < WINDOWS  # mid-epoch
    assert killed["global_step"] == WINDOWS + loader["position"]
    assert killed["carried_state"]["train"].shape[0] == ranks  # one carried state per rank

    resumed = _run(run_dir, *extra)  # the same command again
    assert "resuming from" in resumed.stdout and "last.ckpt (resume=auto" in resumed.stdout
    assert min(_steps(run_dir, 1)) > killed["global_step"]  # the step count went on, not from 0
    _assert_same_run(whole, run_dir)


def test_run_resumed_at_an_epoch_end_matches_too(uninterrupted: Path, tmp_path: Path):
    """Killed just after the epoch-end checkpoint (last.ckpt only at epoch ends here), the same
    command goes on with epoch 1 and ends as the run that never stopped."""
    run_dir, at_epoch_ends = tmp_path / "run", "callbacks.last_checkpoint.every_n_train_steps=null"
    last = run_dir / "checkpoints" / "last.ckpt"
    _kill_when(_train_cmd(run_dir, at_epoch_ends), lambda: last.is_file() and _load(last)["global_step"] >= WINDOWS)
    assert _load(last)["global_step"] == WINDOWS
    _run(run_dir, at_epoch_ends)
    assert min(_steps(run_dir, 1)) > WINDOWS
    _assert_same_run(uninterrupted, run_dir)


# ------------------------------------------------------------------- the probe, end to end
PROBE = [
    "probe.lags=[1,2,4]",
    "probe.max_width=32",
    "probe.batch_positions=256",
    "probe.controls=[shuffled]",
    "probe.eval_every=20",
    "probe.max_steps=160",
    "~callbacks.rich_progress_bar",
    "logger=none",
]


def _probe_cmd(ckpt: str, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "probe.py"), f"ckpt={ckpt}", *PROBE, *extra, f"hydra.run.dir={run_dir}"]


def test_sigkilled_probe_resumes_to_the_uninterrupted_signature(trained_lm: dict, tmp_path: Path):
    """probe.py killed with SIGKILL after its second dev check, then run again with the same
    command (the run-dir policy resumes it from its last.ckpt), ends with the signature of a probe
    that was never stopped."""
    ckpt, cache = trained_lm["dir"], f"paths.cache_dir={tmp_path / 'cache'}"
    whole = subprocess.run(_probe_cmd(ckpt, tmp_path / "whole", cache), capture_output=True, text=True, env=_env())
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed_dir = tmp_path / "killed"
    last = killed_dir / "checkpoints" / "last.ckpt"
    _kill_when(_probe_cmd(ckpt, killed_dir, cache), lambda: last.is_file() and _load(last)["global_step"] >= 40, 300)
    killed_at = _load(last)["global_step"]
    assert 40 <= killed_at < 160 and not (killed_dir / "signature.npz").exists()
    resumed = subprocess.run(_probe_cmd(ckpt, killed_dir, cache), capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming the probe from {last}" in resumed.stderr + resumed.stdout
    a, b = (Signature.load(d / "signature.npz") for d in (tmp_path / "whole", killed_dir))
    assert a.meta["convergence"] == b.meta["convergence"]  # every head: the same steps, best dev loss, state
    np.testing.assert_array_equal(a.confusion, b.confusion)


# --------------------------------------------------------------- speech: LAS, end to end
LAS_RUN = [
    "model=las",
    "data=fsdd",
    "data.limit={train: 160, dev: 8, test: 8}",
    "data.batch_seconds=4",
    "data.spec_augment={_target_: memsig.data.speech.SpecAugment}",  # random masks: the random state resumes too
    "model.listener_hidden=16",
    "model.speller_hidden=24",
    "model.attention_size=12",
    "model.embedding_size=8",
    "model.warmup_steps=0",
    "trainer.max_epochs=2",
    "callbacks.last_checkpoint.every_n_train_steps=2",
    "~callbacks.rich_progress_bar",
    "logger=csv",
    "test=false",
]


def _las_cmd(run_dir: Path) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "train.py"), *LAS_RUN, f"hydra.run.dir={run_dir}"]


def test_sigkilled_las_run_resumes_mid_epoch_bit_exactly(tmp_path: Path):
    """The speech loader resumes like the text one: a LAS run (dropout, SpecAugment) killed with
    SIGKILL in its second epoch, run again with the same command, ends as the run never stopped."""
    whole = subprocess.run(_las_cmd(tmp_path / "whole"), capture_output=True, text=True, env=_env(), timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    steps = _load(tmp_path / "whole" / "checkpoints" / "last.ckpt")["global_step"]
    per_epoch = steps // 2
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    _kill_when(_las_cmd(run_dir), lambda: last.is_file() and _load(last)["global_step"] > per_epoch + 1, 300)
    killed = _load(last)
    loader = killed["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert killed["epoch"] == 1 and 0 < loader["position"] < per_epoch  # mid-epoch
    resumed = subprocess.run(_las_cmd(run_dir), capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path / "whole", run_dir, steps)
