"""After training: other corpora's test scores and the memory signatures of the trained model.

Two optional blocks of ``conf/train.yaml`` make a train run one step of a study:

- ``evaluate_on``: name -> data config. The tested checkpoint is also scored on each of these
  corpora's test split (metrics ``eval/<name>/loss|bpc|ppl``), e.g. WSJ perplexity of a
  model trained on Shakespeare.
- ``signature``: ``probe`` (a ``conf/probe/*.yaml`` preset, picked by ``size=...`` or
  ``probe@signature.probe=<preset>``; null: no signature), ``data`` (null: the run's data),
  ``variants`` (name -> overrides of ``probe``: one more
  signature each, e.g. deeper decoders on the top layers) and ``plot_formats``.
  Writes ``signatures/<name>.npz`` (``main`` and each variant) and ``signatures/<name>/``
  figures into the run dir. ``bases`` (factorized LM only): per-basis signatures
  (:func:`write_bases`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from memsig.data.io import sha256_of
from memsig.models.checkpoint import load_model
from memsig.probe.probes import PROBES
from memsig.tasks.probe import source_meta, without_augmentation, write_baseline, write_figures

log = logging.getLogger(__name__)


def evaluate_elsewhere(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, ckpt: str | None
) -> dict[str, float]:
    """Test metrics of ``ckpt`` (None: the model as it is) on every corpus of ``cfg.evaluate_on``."""
    metrics: dict[str, float] = {}
    for name, data_cfg in (cfg.get("evaluate_on") or {}).items():
        datamodule = hydra.utils.instantiate(data_cfg, vocab=model.vocab)
        for key, value in trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0].items():
            metrics[f"eval/{name}/{key.removeprefix('test/')}"] = float(value)
        log.info("%s test: %s", name, {k: round(v, 4) for k, v in metrics.items() if k.startswith(f"eval/{name}/")})
    return metrics


def probe_settings(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Signature name -> probe config (``main`` from ``signature.probe``, then each variant).

    A variant's options apply to whichever probe the preset builds; options that only one kind
    of probe has go under its kind (``mlp:`` / ``ridge:``, :data:`~memsig.probe.probes.PROBES`),
    e.g. deeper decoders: ``{mlp: {hidden_layers: 2}, ridge: {features: 1024}}``."""
    base = cfg.signature.probe
    if base is None:
        return {}
    base = OmegaConf.create(OmegaConf.to_container(base, resolve=True))  # not in struct mode: variants may add keys
    kind = hydra.utils.get_class(base._target_).kind
    settings = {}
    for name, extra in {"main": {}, **(cfg.signature.get("variants") or {})}.items():
        extra = OmegaConf.to_container(OmegaConf.create(extra), resolve=True)
        scoped = {k: extra.pop(k) for k in list(extra) if k in PROBES}
        settings[name] = OmegaConf.to_container(OmegaConf.merge(base, extra, scoped.get(kind, {})), resolve=True)
    return settings


def _probed(cfg: DictConfig, ckpt: str | Path, datamodule: Any) -> tuple[Any, Any]:
    """The model in ``ckpt`` and the data it is probed on (``signature.data``, else ``datamodule``)."""
    model = load_model(ckpt)
    if cfg.signature.get("data") is not None:
        datamodule = hydra.utils.instantiate(cfg.signature.data, vocab=model.vocab)
    return model, without_augmentation(datamodule)


def write_signatures(cfg: DictConfig, ckpt: str | Path, datamodule: Any, out: Path) -> dict[str, str]:
    """Probe ``ckpt`` with every setting of :func:`probe_settings`; name -> signature file."""
    settings = probe_settings(cfg)
    if not settings:
        return {}
    model, datamodule = _probed(cfg, ckpt, datamodule)
    meta = source_meta(model, ckpt, cfg.signature.data or cfg.data)
    written = {}
    for name, options in settings.items():
        probe = hydra.utils.instantiate(options)
        log.info("signature %r (%s probe)", name, probe.kind)
        sig = probe.fit(model, datamodule, progress=False)
        sig.meta.update({**meta, "signature": name})
        path = sig.save(out / "signatures" / f"{name}.npz")
        write_figures(sig, out / "signatures" / name, list(cfg.signature.plot_formats))
        memory = sig.memory_table()
        print(
            f"signature {name}: marginal recall per lag\n{sig.table()}" + (f"\n{memory}" if memory else ""), flush=True
        )
        written[name] = str(path)
        if name == "main":
            formats = list(cfg.signature.plot_formats)
            base, _ = write_baseline(
                cfg.signature.get("baseline"), datamodule, sig, out, formats, out / "signatures" / name
            )
            if base is not None:
                print(f"what the later symbols alone imply (baseline.npz):\n{base.table()}", flush=True)
    return written


def write_bases(cfg: DictConfig, ckpt: str | Path, datamodule: Any, out: Path, main: str) -> dict[str, str]:
    """``signature.bases`` (``names``, ``summary``) of a factorized LM (:mod:`memsig.tasks.bases`),
    probed like the ``main`` signature (its file: ``main``); name -> written file (empty without
    ``signature.bases``)."""
    from memsig.models.factorized import FactorizedCharLM
    from memsig.probe.signature import Signature
    from memsig.tasks.bases import write_basis_signatures

    if not cfg.signature.get("bases") or not probe_settings(cfg):
        return {}
    model, datamodule = _probed(cfg, ckpt, datamodule)
    if not isinstance(model, FactorizedCharLM):
        raise ValueError(f"signature.bases needs a factorized LM (model=factorized_lstm), not a {type(model).__name__}")
    bases = OmegaConf.to_container(cfg.signature.bases, resolve=True)
    probe_ = hydra.utils.instantiate(probe_settings(cfg)["main"])
    meta = {"checkpoint": str(ckpt), "checkpoint_sha256": sha256_of(ckpt), "split": "test"}

    def probe(source: Any) -> Any:
        return probe_.fit(source, datamodule, meta=meta, progress=False)

    return write_basis_signatures(
        model,
        datamodule,
        Signature.load(main),
        bases.get("names", []),
        out / "signatures",
        probe,
        bases.get("summary"),
        list(cfg.signature.plot_formats),
    )
