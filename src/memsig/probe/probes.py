"""One probe interface: a probe is built from its options, then fits a model's signature.

==================  =====================================================  ==============================
probe               decoders                                               preset
==================  =====================================================  ==============================
:class:`MLPProbe`   MLPs trained until each converges (the measurement)    ``conf/probe/default.yaml``,
                                                                           ``paper.yaml``
:class:`RidgeProbe` closed-form ridge on random ReLU features (a preview)  ``conf/probe/quick.yaml``
==================  =====================================================  ==============================

Both are built by Hydra from ``_target_`` (``hydra.utils.instantiate(cfg.probe)``), check their
options when built (an unknown option is named at once, not after an hour of caching), and
answer ``fit(source, datamodule) -> Signature`` whichever entry point calls them (``probe.py``,
``train.py``'s signature step, :func:`memsig.probe`). They share the lag convention and label
counting (:mod:`memsig.probe.targets`: targets, prior, the model's next-symbol confusion) and
the controls (:class:`~memsig.probe.controls.ControlledSource`).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import lightning as L
from omegaconf import Container, OmegaConf

from memsig.probe.backward import reads_text
from memsig.probe.multihead import MultiHeadProbe, fit_probe
from memsig.probe.quick import join_ranks, quick_signature
from memsig.probe.signature import Signature
from memsig.probe.targets import check_lags
from memsig.states import StateSource

log = logging.getLogger(__name__)

TrainerFactory = Callable[[dict[str, Any]], L.Trainer]


class Probe(Protocol):
    """What every probe offers: its kind, its options, and a signature of a model on data."""

    kind: ClassVar[str]
    options: dict[str, Any]

    def fit(
        self, source: StateSource, datamodule: Any, *, meta: dict[str, Any] | None = None, progress: bool = True
    ) -> Signature: ...


def _checked(fn: Callable[..., Any], options: dict[str, Any], skip: int, what: str) -> dict[str, Any]:
    """``options`` as plain Python values (Hydra passes lists as ``ListConfig``) after checking that
    ``fn`` accepts them (its first ``skip`` arguments are given at fit time): TypeError naming the
    unknown option and the ones it takes; ValueError for ``lags`` that are not a list of distinct
    integers (:func:`~memsig.probe.targets.check_lags`)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    known = {p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD} - {"meta"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{what} has no option {', '.join(map(repr, unknown))}; it takes: {', '.join(sorted(known))}")
    plain = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, Container) else v for k, v in options.items()}
    if plain.get("lags") is not None:
        plain["lags"] = check_lags(plain["lags"])
    return plain


class MLPProbe:
    """MLP decoders for every (state, lag), trained together until each converges
    (:class:`~memsig.probe.multihead.MultiHeadProbe`: the stopping rule, seeds, controls, cache).

    Args:
        trainer: builds the Lightning trainer from the settings the probe's stopping rule needs
            (``MultiHeadProbe.trainer_settings()``); None: a CPU/GPU default trainer without
            loggers or checkpoints. ``probe.py`` passes one with its loggers and callbacks.
        **options: :class:`~memsig.probe.multihead.MultiHeadProbe`'s arguments (all but ``source``).
    """

    kind: ClassVar[str] = "mlp"

    def __init__(self, trainer: TrainerFactory | None = None, **options: Any) -> None:
        self.options = _checked(MultiHeadProbe.__init__, options, 2, "the MLP probe")
        self.trainer = trainer

    def module(self, source: StateSource, datamodule: Any = None) -> MultiHeadProbe:
        """The LightningModule that trains this probe's decoders on ``source`` (read from
        ``datamodule``). Conditional memory (``baseline_order``) is measured on text only: on
        other data (speech) the probe runs without it and logs so."""
        options = self.options
        if options.get("baseline_order") and datamodule is not None and not reads_text(datamodule):
            log.info("probe.baseline_order: the backward-context baseline needs text data; probing without it")
            options = {**options, "baseline_order": None}
        return MultiHeadProbe(source, **options)

    def fit(
        self,
        source: StateSource,
        datamodule: Any,
        *,
        meta: dict[str, Any] | None = None,
        progress: bool = True,
        ckpt_path: str | None = None,
    ) -> Signature:
        """Train (or resume from ``ckpt_path``, a probe checkpoint) and score on test."""
        module = self.module(source, datamodule)
        settings = module.trainer_settings()
        if self.trainer is not None:
            trainer = self.trainer(settings)
        else:
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer = L.Trainer(
                **settings,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=progress,
            )
        return fit_probe(module, datamodule, trainer, ckpt_path, meta)


class RidgeProbe:
    """The preview: closed-form ridge decoders on random ReLU features of the state, every
    training position in one pass (:func:`~memsig.probe.quick.quick_signature`).

    Args:
        **options: :func:`~memsig.probe.quick.quick_signature`'s arguments (all but ``source``
            and ``datamodule``).
    """

    kind: ClassVar[str] = "ridge"

    def __init__(self, **options: Any) -> None:
        self.options = _checked(quick_signature, options, 2, "the ridge probe")

    def fit(
        self, source: StateSource, datamodule: Any, *, meta: dict[str, Any] | None = None, progress: bool = True
    ) -> Signature:
        """The signature; on the ranks ``torchrun`` started, each takes its share of every batch's
        positions and the sums are over all of them (:func:`~memsig.probe.quick.quick_signature`)."""
        join_ranks()
        return quick_signature(source, datamodule, meta=meta, **self.options)


PROBES: dict[str, type[MLPProbe] | type[RidgeProbe]] = {"mlp": MLPProbe, "ridge": RidgeProbe}


def make_probe(probe: str | Probe, **options: Any) -> Probe:
    """``probe`` itself, or the probe of that kind (:data:`PROBES`) built with ``options``."""
    if not isinstance(probe, str):
        if options:
            raise TypeError("pass options to the probe's constructor, not beside a built probe")
        return probe
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; one of {', '.join(PROBES)}")
    return PROBES[probe](**options)
