"""Loading memsig checkpoints with clear errors instead of shape mismatches.

Every memsig model writes ``checkpoint["memsig"] = {"model_class", "vocab"}``. Loading
checks the class, the architecture and the symbol set before any weight is touched.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch

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
