"""The run-dir policy (memsig.tasks.rundir) and errors shown as messages, on the real entry points."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memsig.resolvers import PROJECT_ROOT
from memsig.tasks.rundir import RunDirError, claim_run_dir
from memsig.tasks.train import train

from conftest import TINY_RUN, compose_cfg


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change", ["model.lr=0.0003", "model.hidden_size=64"])
def test_a_finished_train_dir_is_refused_and_left_as_it_was(trained_lm, change):
    before = _snapshot(trained_lm["dir"])
    cfg = compose_cfg([*TINY_RUN, change, "trainer.max_steps=100"], trained_lm["dir"])
    with pytest.raises(RunDirError, match="holds a finished run \\(metrics.json\\).*choose a new run dir"):
        train(cfg)
    assert _snapshot(trained_lm["dir"]) == before  # its config, metrics and checkpoints untouched


def test_an_interrupted_dir_resumes_its_own_settings_only(tmp_path):
    run = ["debug=fdr", "data.max_chars=20000"]
    assert claim_run_dir(compose_cfg(run, tmp_path), "metrics.json") is False  # a new dir
    assert claim_run_dir(compose_cfg([*run, "resume=never"], tmp_path), "metrics.json") is True
    saved = (tmp_path / ".hydra" / "config.yaml").read_bytes()
    other = compose_cfg([*run, "model.lr=0.0003", "trainer.max_steps=100"], tmp_path)
    with pytest.raises(RunDirError, match="interrupted run with other settings") as err:
        claim_run_dir(other, "metrics.json")
    assert "model.lr: 0.003 -> 0.0003" in str(err.value) and "trainer.max_steps" in str(err.value)
    assert (tmp_path / ".hydra" / "config.yaml").read_bytes() == saved


def test_an_unwritable_checkpoint_dir_stops_the_run_before_training(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the run writes its checkpoint folder")
    cfg = compose_cfg(["debug=fdr", "data.max_chars=20000"], tmp_path)
    with pytest.raises(RunDirError, match=f"cannot write into {tmp_path / 'checkpoints'}"):
        train(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # nothing trained, nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits do not bind root")
def test_a_read_only_run_dir_is_named(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match=f"cannot write into {tmp_path}"):
            claim_run_dir(compose_cfg(["debug=fdr"], tmp_path / "run"), "metrics.json")
    finally:
        tmp_path.chmod(0o755)


def _train_py(*overrides: str, full_error: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1" if full_error else "0"}
    cmd = [sys.executable, str(PROJECT_ROOT / "train.py"), *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_a_memsig_error_prints_its_message_alone(tmp_path):
    missing = tmp_path / "nope.txt"
    bad = ["debug=fdr", f"data.corpus.path={missing}", "data.corpus.url=null", f"hydra.run.dir={tmp_path / 'run'}"]
    plain = _train_py(*bad)
    assert plain.returncode == 1
    message, hint = plain.stderr.rstrip().splitlines()[-2:]
    assert message.startswith(f"Error: CorpusError: corpus file {missing} does not exist"), plain.stderr[-2000:]
    assert "Traceback" not in plain.stderr and hint == "(set HYDRA_FULL_ERROR=1 for the traceback)"
    full = _train_py(*bad[:-1], f"hydra.run.dir={tmp_path / 'run2'}", full_error=True)
    assert full.returncode == 1 and "Traceback" in full.stderr and "does not exist" in full.stderr


def test_a_run_dir_that_cannot_be_written_is_named_before_hydra_logs_there():
    out = _train_py("debug=fdr", "hydra.run.dir=/proc/memsig_run")
    assert out.returncode == 1
    assert out.stderr.startswith("Error: RunDirError: cannot write into /proc"), out.stderr[-2000:]
    assert "Traceback" not in out.stderr
