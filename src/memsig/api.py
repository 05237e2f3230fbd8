"""The Python API beside the command line: ``signature = memsig.probe(model, data, ...)``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L

from memsig.data.corpora import TextCorpus
from memsig.data.text import TextDataModule
from memsig.models.checkpoint import load_model
from memsig.probe.signature import Signature
from memsig.states import StateSource


def as_datamodule(
    data: L.LightningDataModule | str | Path, source: StateSource, **kwargs: Any
) -> L.LightningDataModule:
    """``data`` itself (a :class:`TextDataModule`, a speech DataModule: any DataModule with a
    ``vocab``), or a :class:`TextDataModule` over a text file/folder with the model's vocab."""
    if isinstance(data, L.LightningDataModule):
        data.vocab.check_same(source.vocab, what="model")
        return data
    return TextDataModule(TextCorpus(str(data)), source.vocab, **kwargs)


def probe(
    model: StateSource | str | Path,
    data: L.LightningDataModule | str | Path,
    *,
    quick: bool = False,
    progress: bool = True,
    trainer: L.Trainer | None = None,
    data_kwargs: dict[str, Any] | None = None,
    **probe_kwargs: Any,
) -> Signature:
    """The memory signature of ``model`` on ``data``.

    Args:
        model: a :class:`~memsig.states.StateSource` (a memsig model, a
            :class:`~memsig.adapters.HookedStateSource`, your own) or a checkpoint path.
        data: a DataModule (:class:`~memsig.data.text.TextDataModule`, a speech DataModule)
            or a text file/folder path.
        quick: closed-form ridge decoders (:func:`~memsig.probe.quick.quick_signature`)
            instead of the MLP probe.
        progress: show a progress bar.
        trainer: a Lightning trainer to use instead of the default CPU one (it must carry the
            probe's :meth:`~memsig.probe.multihead.MultiHeadProbe.trainer_settings`).
        data_kwargs: TextDataModule options when ``data`` is a path (batch_size, regime…).
        probe_kwargs: :class:`~memsig.probe.multihead.MultiHeadProbe` (or quick) options:
            ``states``, ``lags``, ``width``, ``depth``, ``seeds``, ``controls``, ``target``, the
            stopping rule (``patience``, ``eval_every``, ``max_steps``…)…
    """
    source = load_model(model) if isinstance(model, (str, Path)) else model
    dm = as_datamodule(data, source, **(data_kwargs or {}))
    if quick:
        from memsig.probe.quick import quick_signature

        return quick_signature(source, dm, **probe_kwargs)
    from memsig.probe.multihead import MultiHeadProbe, fit_probe

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    probe_ = MultiHeadProbe(source, **probe_kwargs)
    trainer = trainer or L.Trainer(
        **probe_.trainer_settings(),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )
    return fit_probe(probe_, dm, trainer)
