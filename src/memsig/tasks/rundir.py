"""The run-dir policy of every entry point (``train.py``, ``probe.py``, ``export.py``), and
errors shown as messages.

A run dir is claimed before anything is computed or written:

| the run dir holds | same settings | other settings |
|---|---|---|
| nothing (a new dir) | run | run |
| an interrupted run: ``.hydra/config.yaml``, no result file | resume it | refuse, naming what differs |
| a finished run: its result file (``metrics.json``, ``probe.json``, ``export.json``) | refuse | refuse |

Settings are the task config as composed (before interpolation), less :data:`RESUME_KEYS`.
Claiming checks that the dir and its existing sub-folders are writable, then writes
``.hydra/`` itself (``hydra.output_subdir`` is null), so a refused run leaves the dir as it
found it. :class:`~memsig.tasks.hydra_callbacks.RunDirCheck` checks the run or sweep dir can be
written before Hydra configures its log file there.

:func:`clean_errors` wraps a task so that a memsig error prints its message alone and exits
with status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback, as for Hydra's own errors.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from memsig.data.io import atomic_write_bytes

RESUME_KEYS = ("resume", "ckpt_path", "probe_ckpt")  # how to go on, not what the run is
SUBFOLDERS = ("checkpoints", "figures", "signatures", "csv", "lstmvis")
T = TypeVar("T")


class RunDirError(RuntimeError):
    """A run dir this run must not write into (finished, other settings, or not writable)."""


def claim_run_dir(cfg: DictConfig, result_file: str) -> bool:
    """Apply the run-dir policy (module docstring) to ``cfg.paths.output_dir``; write ``.hydra/``.

    ``result_file`` is the file the task writes last. Returns True when the dir holds an
    interrupted run of these settings (the caller resumes it), False for a new dir.
    """
    out = Path(cfg.paths.output_dir)
    fix = f"choose a new run dir (hydra.run.dir=...), or delete {out} to start it over"
    if (out / result_file).exists():
        raise RunDirError(f"{out} holds a finished run ({result_file}); its results stay as they are: {fix}")
    saved = out / ".hydra" / "config.yaml"
    interrupted = saved.is_file()
    if interrupted:
        changed = list(_differences(_settings(OmegaConf.load(saved)), _settings(cfg)))
        if changed:
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise RunDirError(
                f"{out} holds an interrupted run with other settings ({shown}): run it again with its own "
                f"settings to resume it, or {fix}"
            )
    for folder in (out, *(out / s for s in SUBFOLDERS if (out / s).exists())):
        check_writable(folder)
    atomic_write_bytes(saved, OmegaConf.to_yaml(cfg).encode())
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        atomic_write_bytes(out / ".hydra" / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}).encode())
        atomic_write_bytes(out / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task).encode())
    return interrupted


def check_writable(folder: Path) -> None:
    """Raise :class:`RunDirError` unless a file can be created in ``folder`` (or, where it does
    not exist yet, in its nearest existing parent)."""
    target = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as err:
        raise RunDirError(
            f"cannot write into {target} ({err.strerror}), where this run writes {folder}: fix its "
            "permissions or choose another run dir (hydra.run.dir=..., or hydra.sweep.dir=... for -m)"
        ) from None


def _settings(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain, uninterpolated values, without ``hydra`` and :data:`RESUME_KEYS`."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    return {k: v for k, v in plain.items() if k not in (*RESUME_KEYS, "hydra")}


def _differences(old: Any, new: Any, key: str = "") -> Iterator[str]:
    """``key: old -> new`` for every leaf that differs between two plain configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            yield from _differences(old.get(k, "(unset)"), new.get(k, "(unset)"), f"{key}.{k}" if key else str(k))
    elif old != new:
        yield f"{key}: {old} -> {new}"


def clean_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """``task`` with memsig's errors (:data:`USER_ERRORS`, also when a constructor that Hydra calls
    raises one) shown as their message alone (exit status 1) in a single run. A multirun job re-raises, so Hydra records it as failed and the
    sweep goes on; ``HYDRA_FULL_ERROR=1`` shows every traceback."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except (*USER_ERRORS, InstantiationException) as err:
            cause = err.__cause__ if isinstance(err, InstantiationException) else err  # a constructor's own error
            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if not isinstance(cause, USER_ERRORS) or multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            exit_with(cause)

    return run


def exit_with(err: Exception) -> None:
    """Print ``err`` as memsig prints its errors and exit with status 1."""
    print(
        f"Error: {type(err).__name__}: {err}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr, flush=True
    )
    sys.exit(1)


# Errors memsig raises with a message that names the problem and its fix. Anything else is a
# bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    FloatingPointError,
    MemoryError,
    OSError,
    ImportError,
    RunDirError,
)
