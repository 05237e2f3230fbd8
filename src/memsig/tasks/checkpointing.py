"""Checkpoint files written atomically, so a killed run never leaves a broken ``last.ckpt``.

Lightning's :class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` writes through an
fsspec transaction: the bytes go to a temporary file in the system temp dir (``$TMPDIR``)
and ``shutil.move`` then puts it in place. That is an atomic rename only when ``$TMPDIR``
is on the run dir's filesystem. On a cluster (node-local ``/tmp``, run dirs on a shared
filesystem), and wherever ``/tmp`` is a tmpfs, it is a copy: a job killed during the copy
leaves a truncated checkpoint that the next attempt cannot load. :class:`AtomicCheckpointIO`
writes a temporary file beside the target, fsyncs it and renames it over the target.

:class:`AtomicCheckpoints` (a callback, in ``conf/callbacks/model_checkpoint.yaml``) puts it
on the trainer. It is a callback rather than a trainer plugin because ``trainer.plugins``
belongs to the Slurm launcher config (its cluster environment); Hydra would replace one
plugin list with the other instead of joining them.
"""

from __future__ import annotations

import io
import os
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from memsig.data.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local files appear whole or not at all (temp file + rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote stores: Lightning's way
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getbuffer())  # type: ignore[arg-type]
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)  # as a plain write would leave it (the temp file is 0600)


class AtomicCheckpoints(L.Callback):
    """Write this trainer's checkpoints with :class:`AtomicCheckpointIO`.

    A strategy that already has its own checkpoint IO (a plugin, DeepSpeed, FSDP) keeps it.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()


class CheckpointEveryCheck(L.Callback):
    """Write ``<dirpath>/last.ckpt`` after every validation run, once the module has recorded it.

    A probe's dev check decides its heads' stopping (``MultiHeadProbe.on_validation_epoch_end``),
    so its checkpoint belongs after the check: resumed from it, a killed probe continues exactly.
    (Lightning's ``ModelCheckpoint`` with ``save_top_k: 0`` writes ``last.ckpt`` only at the end of
    training, and with ``every_n_train_steps`` before the check of that step.)
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(os.path.join(self.dirpath, "last.ckpt"), weights_only=False)  # all of it, quietly
