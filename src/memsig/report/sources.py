"""What a report shows: find and load the results in a probe run, a train run or a multirun dir.

- probe run (``probe.py``): ``signature.npz`` (+ ``probe.json``, ``gradients.npz``);
- train run (``train.py`` with ``signature.probe`` set): ``metrics.json`` and ``signatures/*.npz``;
- multirun (``train.py -m``): one train run per job folder, collected by
  :meth:`memsig.report.study.Study.from_sweep`.

The train run behind a signature is found from the checkpoint path in its provenance
(``<train run>/checkpoints/<name>.ckpt``), so a probe run's page shows the model's perplexities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memsig.data.io import sha256_of
from memsig.plots.interactive import GradientLike
from memsig.probe.signature import Signature

SIGNATURE = "signature.npz"
GRADIENTS = "gradients.npz"
METRICS = "metrics.json"
EXPECTED = (
    "a report needs one of:\n"
    f"  - a probe run dir with {SIGNATURE} (written by `python probe.py ckpt=<train run dir or .ckpt>`);\n"
    f"  - a train run dir with {METRICS} and signatures/*.npz (written by `python train.py "
    "probe@signature.probe=quick`, or any signature.probe preset);\n"
    f"  - a multirun dir whose job folders are such train runs (written by `python train.py -m ...`)."
)
Kind = Literal["probe", "train", "sweep"]


class ReportError(FileNotFoundError):
    """The folder holds nothing to report; the message says what it should hold and what writes it."""


@dataclass
class RunResults:
    """One probe or train run.

    Attributes:
        kind: ``"probe"`` or ``"train"``.
        run_dir: the run's folder.
        signatures: name -> signature (``signature`` for a probe run, the file stems of ``signatures/``).
        train_dir: the train run that made the probed checkpoint (None: not found).
        train_result: that run's ``metrics.json`` (None: not found).
        probe_result: ``probe.json`` of a probe run (None otherwise).
        gradients: the run's state gradients (``gradients.npz``), None when it has none.
        baseline: the backward-context baseline of a probe run (``baseline.npz``), or None.
    """

    kind: Kind
    run_dir: Path
    signatures: dict[str, Signature]
    train_dir: Path | None
    train_result: dict[str, Any] | None
    probe_result: dict[str, Any] | None
    gradients: GradientLike | None
    baseline: Signature | None = None


def kind_of(path: Path) -> Kind:
    """What ``path`` is (see module docstring); :class:`ReportError` saying what it should hold otherwise."""
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory; {EXPECTED}")
    if (path / SIGNATURE).is_file():
        return "probe"
    if (path / METRICS).is_file():
        if not any((path / "signatures").glob("*.npz")):
            raise ReportError(
                f"train run {path} has {METRICS} but no signatures/*.npz. Probe it with "
                f"`python probe.py ckpt={path}` and report on that run dir, or {EXPECTED}"
            )
        return "train"
    if any(path.glob(f"*/{METRICS}")):
        return "sweep"
    raise ReportError(
        f"{path} holds no signature ({SIGNATURE}, signatures/*.npz or job folders with {METRICS}); {EXPECTED}"
    )


def candidates(recorded: str | Path, near: Path) -> list[Path]:
    """Where a path recorded by a run may be now: as written, or (relative) from the current dir or
    any folder above ``near`` (runs record paths relative to where they were started)."""
    path = Path(recorded)
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, *(folder / path for folder in near.resolve().parents)]


def train_run_of(sig: Signature, near: Path) -> Path | None:
    """The train run dir (with ``metrics.json``) whose checkpoint ``sig`` probed, if it can be found."""
    recorded = sig.meta.get("checkpoint")
    if not recorded:
        return None
    for ckpt in candidates(recorded, near):
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if (run / METRICS).is_file():
            return run
    return None


def checkpoint_status(sig: Signature, near: Path) -> str:
    """Whether the probed checkpoint file is still there and still has the recorded sha256."""
    recorded, digest = sig.meta.get("checkpoint"), sig.meta.get("checkpoint_sha256")
    if not recorded or not digest:
        return "not recorded"
    found = next((p for p in candidates(recorded, near) if p.is_file()), None)
    if found is None:
        return "checkpoint file not found here"
    return "file matches" if sha256_of(found) == digest else f"file {found} has changed since it was probed"


def load_gradients(run_dir: Path) -> GradientLike | None:
    """The run's :class:`~memsig.analysis.state_gradients.GradientMemory` if it has ``gradients.npz``."""
    path = run_dir / GRADIENTS
    if not path.is_file():
        return None
    from memsig.analysis.state_gradients import GradientMemory  # torch: only when there are gradients

    return GradientMemory.load(path)


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_run(run_dir: Path, kind: Kind) -> RunResults:
    """The results of a probe or train run (``kind`` from :func:`kind_of`)."""
    if kind == "probe":
        sigs = {"signature": Signature.load(run_dir / SIGNATURE)}
        train_dir = train_run_of(sigs["signature"], run_dir)
    else:
        sigs = {
            p.stem: Signature.load(p)
            for p in sorted((run_dir / "signatures").glob("*.npz"), key=lambda p: (p.stem != "main", p.stem))
        }
        train_dir = run_dir
    return RunResults(
        kind,
        run_dir,
        sigs,
        train_dir,
        _json(train_dir / METRICS) if train_dir else None,
        _json(run_dir / "probe.json") if kind == "probe" else None,
        load_gradients(run_dir),
        Signature.load(run_dir / "baseline.npz") if (run_dir / "baseline.npz").is_file() else None,
    )
