"""The Python API beside the command line: ``signature = memsig.probe(model, data, ...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from memsig.data.corpora import TextCorpus
from memsig.data.text import TextDataModule
from memsig.models.checkpoint import load_model
from memsig.probe.probes import Probe, make_probe
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
    probe: str | Probe = "mlp",
    progress: bool = True,
    data_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Signature:
    """The memory signature of ``model`` on ``data``.

    Args:
        model: a :class:`~memsig.states.StateSource` (a memsig model, a
            :class:`~memsig.adapters.HookedStateSource`, your own) or a checkpoint path.
        data: a DataModule (:class:`~memsig.data.text.TextDataModule`, a speech DataModule)
            or a text file/folder path.
        probe: ``"mlp"`` (:class:`~memsig.probe.probes.MLPProbe`, decoders trained until they
            converge), ``"ridge"`` (:class:`~memsig.probe.probes.RidgeProbe`, the closed-form
            preview), or a probe you built (then pass no ``options``).
        progress: show a progress bar.
        data_kwargs: TextDataModule options when ``data`` is a path (batch_size, regime…).
        options: the probe's options: ``states``, ``lags``, ``controls``, ``seed``… and, for the
            MLP probe, ``width``, ``hidden_layers``, ``seeds``, the stopping rule (``patience``,
            ``eval_every``, ``max_steps``…), ``trainer`` (a factory of the Lightning trainer).
    """
    probe_ = make_probe(probe, **options)  # a bad option fails here, before any data is read
    source = load_model(model) if isinstance(model, (str, Path)) else model
    return probe_.fit(source, as_datamodule(data, source, **(data_kwargs or {})), progress=progress)
