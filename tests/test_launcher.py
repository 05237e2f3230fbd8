"""The submitit launchers: a local sweep end to end, a preempted job requeued and resumed,
and the Slurm config as sbatch would get it (no cluster needed), DDP on several nodes too.
The tasks of a DDP Slurm job, imitated on this machine: tests/test_ddp.py.

``hydra/launcher=local`` runs jobs through submitit's local executor: the code path of
``hydra/launcher=slurm`` (pickled launcher, job environment, USR2 handler, requeue) with
subprocesses instead of sbatch.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from memsig.resolvers import PROJECT_ROOT

from conftest import CONF, TINY_RUN

SWEEP = ["debug=smoke", "callbacks=model_checkpoint", "data.max_chars=15000", "model.hidden_size=32"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def _train_m(sweep: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        "hydra/launcher=local",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    ]


def test_local_submitit_sweep_writes_metrics_and_summary(tmp_path: Path, tiny_corpus: Path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        _train_m(sweep, *SWEEP, "model.dropout=0.0,0.3"), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # ran as submitit jobs
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["model.dropout"] for r in rows] == ["0.0", "0.3"] and all(float(r["test/loss"]) > 0 for r in rows)
    assert (sweep / "best.csv").is_file()


def _task_pid(sweep: Path) -> int | None:
    """The pid of the submitit task (the process running train()) of this sweep, if started."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and b"submitit.core._submit" in cmd and any(str(sweep).encode() in c for c in cmd):
            return int(proc.name)
    return None


def test_preempted_job_is_requeued_and_resumes_from_last_ckpt(tmp_path: Path, tiny_corpus: Path):
    """USR2 (what Slurm sends before a time limit or at preemption) makes submitit requeue
    the job; the new attempt runs in the same run dir and goes on from its last.ckpt."""
    sweep = tmp_path / "sweep"
    run = [*TINY_RUN, "trainer.max_epochs=2", "callbacks.last_checkpoint.every_n_train_steps=10", "test=false"]
    parent = subprocess.Popen(
        _train_m(sweep, *run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        deadline, pid = time.time() + 120, None
        while parent.poll() is None and time.time() < deadline:
            if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 30:
                pid = _task_pid(sweep / ".submitit")
                break
            time.sleep(0.05)
        assert pid is not None, "the job finished (or never wrote last.ckpt) before it could be preempted"
        os.kill(pid, signal.SIGUSR2)
        out, _ = parent.communicate(timeout=240)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 0, out[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "summary.csv").is_file()
    versions = sorted((sweep / "0" / "csv").glob("version_*/metrics.csv"))
    assert len(versions) == 2  # two attempts in one run dir
    steps = [int(r["step"]) for r in csv.DictReader(versions[1].read_text().splitlines()) if r.get("train/loss")]
    assert min(steps) > 30  # the second attempt went on from last.ckpt
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 118


def _sbatch(overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DictConfig, Any]:
    """The composed config of ``train.py -m hydra/launcher=slurm <overrides>`` and the submitit
    executor its launcher builds, stopped at submission (no cluster needed)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            return_hydra_config=True,
        )
    bin_dir = tmp_path / "bin"  # submitit wants srun on the PATH
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executors = []

    def submit(self, fn, *args):
        executors.append(self._executor)
        raise RuntimeError("not submitting")

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(RuntimeError, match="not submitting"):
        launcher.launch([["model.dropout=0.1"]], initial_job_idx=0)
    (executor,) = executors
    return cfg, executor


def _sbatch_text(executor: Any) -> str:
    return executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")


def test_slurm_launcher_config_reaches_sbatch_and_turns_lightning_requeue_off(tmp_path: Path, monkeypatch):
    overrides = [
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.timeout_min=600",
        "hydra.launcher.mem_gb=64",
        "trainer=gpu",
    ]
    cfg, executor = _sbatch(overrides, tmp_path, monkeypatch)
    (plugin,) = cfg.trainer.plugins  # trainer=gpu keeps what the launcher config adds
    env = hydra.utils.instantiate(plugin)
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert cfg.trainer.accelerator == "gpu"
    sbatch = _sbatch_text(executor)
    for line in ["--partition=gpu", "--gpus-per-node=2", "--time=600", "--mem=64GB", "--signal=USR2@120"]:
        assert f"#SBATCH {line}\n" in sbatch, line
    assert "#SBATCH --nodes=1\n" in sbatch and "#SBATCH --ntasks-per-node=1\n" in sbatch
    assert executor.max_num_timeout == 3  # a job that hits its time limit is requeued too


def test_ddp_on_several_nodes_asks_slurm_for_one_task_per_device(tmp_path: Path, monkeypatch):
    """trainer=ddp on 2 nodes × 4 GPUs: the job has 4 tasks on each of 2 nodes, as Lightning's
    SLURMEnvironment wants (it checks SLURM_NTASKS_PER_NODE and SLURM_NNODES against the trainer)."""
    ddp = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.gpus_per_node=4"]
    cfg, executor = _sbatch(ddp, tmp_path, monkeypatch)
    sbatch = _sbatch_text(executor)
    for line in ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"]:
        assert f"#SBATCH {line}\n" in sbatch, line
    assert "srun" in sbatch  # every task runs the job: one rank each
    env = hydra.utils.instantiate(cfg.trainer.plugins[0])
    job = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4321"}
    task = {"SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_NODEID": "1", "SLURM_NODELIST": "gpu[07-08]"}
    for key, value in {**job, **task}.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # unset here; SLURMEnvironment writes them into os.environ,
        monkeypatch.setenv(key, "")  # so they are recorded first and removed again after the test (a stale
        monkeypatch.delenv(key)  # MASTER_ADDR=gpu07 made later DDP runs wait for a host that is not there)
    env.validate_settings(num_devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes)
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 6, 2, 1)
    assert env.creates_processes_externally and env.main_address == "gpu07"  # every task meets at node 0
    assert env.main_port == 15000 + 4321
