"""Loading memsig checkpoints with clear errors instead of shape mismatches, and finding them.

Every memsig model writes ``checkpoint["memsig"] = {"model_class", "vocab"}``. Loading
checks the class, the architecture and the symbol set before any weight is touched.
:func:`resolve_checkpoint` finds the checkpoint a reference names (a file, a train run dir, a
W&B artifact); :func:`data_config_for` the data config its train run read.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from memsig.vocab import Vocab

TORCH_FILE_STARTS = (b"PK", b"\x80")  # torch.save's zip archive; its legacy format, a pickle


class CheckpointError(ValueError):
    """A checkpoint that cannot serve where it was asked to (wrong model, vocab, file)."""


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .ckpt file from a train run")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_FILE_STARTS):
        what = "it is empty" if not head else f"it starts with {head!r}"
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it is not a PyTorch checkpoint ({what}); pass a .ckpt file from a "
            "train run"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({_reason(err)}): it is damaged (e.g. cut short by an "
            "interrupted copy) or holds more than weights; pass a .ckpt file from a train run"
        ) from None


def _reason(err: Exception) -> str:
    """The gist of ``torch.load``'s error: its first sentence, or the unpickler's own complaint
    without torch's advice on ``weights_only``."""
    text = str(err)
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    gist = (unpickler.group(1) if unpickler else text).split(". ")[0].strip()
    return f"{type(err).__name__}: {gist.splitlines()[0]}" if gist else type(err).__name__


def _meta(checkpoint: dict[str, Any], where: str) -> dict[str, Any]:
    meta = checkpoint.get("memsig")
    if not isinstance(meta, dict) or "model_class" not in meta:
        raise CheckpointError(
            f"the {where} was not written by a memsig model (no 'memsig' entry); train one with train.py"
        )
    return meta


def check_compatible(checkpoint: dict[str, Any], model: L.LightningModule, where: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` can be loaded into ``model``; ``where``
    names it in messages, which put "the" before it (``checkpoint``, ``checkpoint run/last.ckpt``)."""
    meta = _meta(checkpoint, where)
    mine = f"{type(model).__module__}.{type(model).__qualname__}"
    if meta["model_class"] != mine:
        raise CheckpointError(
            f"the {where} holds a {meta['model_class']}, but this run builds a {mine}; "
            "choose the matching model config (model=...) or another checkpoint"
        )
    theirs = checkpoint.get("hyper_parameters", {})
    arch_keys = getattr(model, "ARCH_KEYS", ())
    diffs = [
        f"{k}={theirs.get(k)!r} (checkpoint) vs {model.hparams.get(k)!r} (this run)"
        for k in arch_keys
        if theirs.get(k) != model.hparams.get(k)
    ]
    if diffs:
        raise CheckpointError(
            f"the {where} has another architecture: {'; '.join(diffs)}; set the model options to match"
        )
    model.vocab.check_same(Vocab.from_dict(meta["vocab"]), what=where)


def load_model(path: str | Path, expected: type[L.LightningModule] | None = None) -> L.LightningModule:
    """Load a memsig model from a checkpoint file, in eval mode on the CPU.

    Args:
        path: a ``.ckpt`` written by ``train.py``.
        expected: raise unless the checkpoint holds this class (or a subclass).
    """
    checkpoint = _read(path)
    meta = _meta(checkpoint, f"checkpoint {path}")
    module_name, _, cls_name = meta["model_class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if expected is not None and not issubclass(cls, expected):
        raise CheckpointError(f"checkpoint {path} holds a {meta['model_class']}, not a {expected.__name__}")
    model = cls(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_weights(model: L.LightningModule, path: str | Path) -> None:
    """Copy the weights of the checkpoint at ``path`` into ``model`` (same class, architecture
    and symbol set, else :class:`CheckpointError`); optimizer and schedule are not touched."""
    checkpoint = _read(path)
    check_compatible(checkpoint, model, f"checkpoint {path}")
    model.load_state_dict(checkpoint["state_dict"])


def resolve_checkpoint(ref: str) -> Path:
    """A local checkpoint for ``ref``: a ``.ckpt`` path; a train run dir (its best checkpoint,
    from ``metrics.json``, else ``checkpoints/last.ckpt``); or ``wandb:<artifact ref>`` (downloaded)."""
    if not ref.startswith("wandb:"):
        path = Path(ref).expanduser()
        if not path.is_dir():
            return path
        metrics = path / "metrics.json"
        best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
        return Path(best) if best else path / "checkpoints" / "last.ckpt"
    import wandb

    try:
        folder = Path(wandb.Api().artifact(ref.removeprefix("wandb:")).download())
    except Exception as err:
        raise CheckpointError(
            f"could not fetch W&B artifact {ref!r} ({type(err).__name__}: {err}); log in with `wandb login` "
            "and check the reference (entity/project/name:version), or pass a local path"
        ) from None
    found = sorted(folder.rglob("*.ckpt"))
    if not found:
        raise CheckpointError(f"W&B artifact {ref!r} holds no .ckpt file")
    return found[0]


def data_config_of_run(ckpt: Path) -> DictConfig:
    """The ``data`` config of the train run that wrote ``ckpt`` (``<run>/.hydra/config.yaml``)."""
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise CheckpointError(
            f"no run config at {saved} to tell which data {ckpt.name} was trained on; pass data=<corpus> explicitly"
        )
    return OmegaConf.load(saved).data


def data_config_for(data_cfg: DictConfig | None, ckpt: Path) -> DictConfig:
    """The data config a probe or export of ``ckpt`` reads: ``data_cfg`` when it names a corpus
    (``data=<corpus>``); else (``conf/data/_from_run.yaml``, the default) the train run's, with the keys ``data_cfg`` sets
    (not null) changed."""
    if data_cfg is not None and "_target_" in data_cfg:
        return data_cfg
    base = data_config_of_run(ckpt)
    changes = {k: v for k, v in (data_cfg or {}).items() if v is not None}
    for key in changes:
        if key not in base:
            raise ValueError(
                f"data.{key} does not apply to the data {ckpt.name} was trained on ({base.get('_target_')}, "
                f"which takes {', '.join(k for k in base if k != '_target_')}); drop it or name a corpus (data=...)"
            )
    return OmegaConf.merge(base, changes)
