"""Train a language model from a composed config, test its best checkpoint, report.

Writes into the run dir: ``checkpoints/`` (best by val/loss and ``last.ckpt``), the
loggers' folders, ``signatures/`` and ``report.html`` (:mod:`memsig.report`) when
``signature.probe`` is set, and ``metrics.json``
(final metrics, best checkpoint, signatures, overrides, wall time) — the file
:class:`~memsig.tasks.hydra_callbacks.SweepSummary` and :class:`~memsig.tasks.hydra_callbacks.StudyReport`
collect after a multirun.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from memsig.models.checkpoint import load_weights, resolve_checkpoint
from memsig.models.ngram import NGramLM
from memsig.probe.count_table import count_table_signature
from memsig.probe.targets import resolve_probe
from memsig.report import log_report, write_report
from memsig.tasks.rundir import claim_run_dir
from memsig.tasks.signatures import evaluate_elsewhere, probe_settings, write_bases, write_signatures
from memsig.tasks.utils import instantiate_all, task_overrides, write_json

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (``cfg.train``), then test (``cfg.test``) the model ``cfg`` describes; then score it on
    the ``evaluate_on`` corpora and write its ``signature`` (:mod:`memsig.tasks.signatures`).
    The run dir is claimed first (:mod:`memsig.tasks.rundir`): an interrupted run resumes, a
    finished one or one with other settings is refused.

    ``init_from`` (a checkpoint or train run dir) starts from another run's weights with a
    fresh optimizer: fine-tuning, e.g. on another domain. An n-gram model (``model=ngram``)
    is counted instead of trained.

    Returns the result written to ``metrics.json``: ``metrics`` (floats by name),
    ``best_checkpoint``, ``last_checkpoint``, ``signatures``, ``overrides``, ``wall_time_s``, ``params``.
    """
    start = time.time()
    claim_run_dir(cfg, "metrics.json")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # DDP: the epoch metrics the models compute with torchmetrics are reduced over ranks already
    warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    vocab = hydra.utils.instantiate(cfg.vocab)
    datamodule = hydra.utils.instantiate(cfg.data, vocab=vocab)
    model = hydra.utils.instantiate(cfg.model, vocab=vocab)
    out = Path(cfg.paths.output_dir)
    if isinstance(model, NGramLM):
        return _count_ngram(cfg, model, datamodule, out, start)
    if cfg.get("init_from"):
        source = resolve_checkpoint(str(cfg.init_from))
        load_weights(model, source)
        log.info("initial weights from %s", source)
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers or False
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, trainer))
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") or None
        last = getattr(ckpt_cb, "last_model_path", "") or None
        tested = best if cfg.get("train", True) else cfg.get("ckpt_path")
        metrics = dict(fit_metrics)
        if cfg.get("test", True):
            trainer.test(model, datamodule=datamodule, ckpt_path=tested)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(evaluate_elsewhere(cfg, trainer, model, tested))
        result = {
            "metrics": metrics,
            "best_checkpoint": best,
            "best_val_loss": float(ckpt_cb.best_model_score)
            if getattr(ckpt_cb, "best_model_score", None) is not None
            else None,
            "monitor": getattr(ckpt_cb, "monitor", None),
            "last_checkpoint": last,
            "signatures": {},
            "overrides": task_overrides(),
            "params": sum(p.numel() for p in model.parameters()),
        }
        if trainer.is_global_zero:
            unfit = quality_gate(cfg, metrics)
            if unfit:
                log.warning(
                    "no signature: %s (probe only a model that passed its bar; signature.require=null probes anyway)",
                    unfit,
                )
                result["not_probed"] = unfit
            elif tested or last:
                result["signatures"] = write_signatures(cfg, tested or last, datamodule, out)
                if result["signatures"]:
                    result["bases"] = write_bases(cfg, tested or last, datamodule, out, result["signatures"]["main"])
            elif probe_settings(cfg):
                log.warning("no checkpoint was written (callbacks without model_checkpoint): no signature")
            result["wall_time_s"] = round(time.time() - start, 1)
            write_json(out / "metrics.json", result)
            if result["signatures"]:
                log_report(loggers, write_report(out))
            _print_summary(result, out)
        return result
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()


def _count_ngram(cfg: DictConfig, model: NGramLM, datamodule: Any, out: Path, start: float) -> dict[str, Any]:
    """The n-gram path of :func:`train`: count, score dev/test (and ``evaluate_on``), save, probe.

    Besides the probe's signatures it writes ``signatures/count_table.npz``: the exact
    count-table decoder of the n-gram state (:func:`~memsig.probe.count_table.count_table_signature`).
    """
    datamodule.setup()
    model.fit(datamodule.ids("train"))
    metrics = {
        f"{stage}/{k}": v
        for split, stage in (("dev", "val"), ("test", "test"))
        for k, v in model.evaluate(datamodule.ids(split)).items()
    }
    for name, data_cfg in (cfg.get("evaluate_on") or {}).items():
        other = hydra.utils.instantiate(data_cfg, vocab=model.vocab)
        other.setup()
        metrics.update({f"eval/{name}/{k}": v for k, v in model.evaluate(other.ids("test")).items()})
    ckpt = model.save(out / "checkpoints" / "ngram.ckpt")
    result = {
        "metrics": metrics,
        "best_checkpoint": str(ckpt),
        "best_val_loss": metrics["val/loss"],
        "last_checkpoint": str(ckpt),
        "overrides": task_overrides(),
        "params": 0,
        "signatures": write_signatures(cfg, ckpt, datamodule, out),
    }
    if result["signatures"]:
        _, lags = resolve_probe(model, None, probe_settings(cfg)["main"].get("lags"))  # the probe's lags
        table = count_table_signature(model, datamodule, lags).save(out / "signatures" / "count_table.npz")
        result["signatures"]["count_table"] = str(table)
    result["wall_time_s"] = round(time.time() - start, 1)
    write_json(out / "metrics.json", result)
    _print_summary(result, out)
    return result


def quality_gate(cfg: DictConfig, metrics: dict[str, float]) -> str | None:
    """Why the trained model must not be probed — a metric of ``signature.require``
    (``{metric: bar}``, lower is better) missed its bar or is missing — or None."""
    for metric, bar in (cfg.signature.get("require") or {}).items():
        value = metrics.get(metric)
        if value is None or not value <= bar:
            return f"{metric} = {value} misses its bar <= {bar}"
    return None


def resume_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The checkpoint ``fit`` starts from: ``cfg.ckpt_path`` when set; else, with
    ``resume: auto``, the ``last.ckpt`` an earlier attempt at this run left in the
    checkpoint dir (a killed or requeued job goes on where it stopped); else None.
    """
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path
    mode = cfg.get("resume")
    if mode in (None, False, "never"):
        return None
    if mode != "auto":
        raise ValueError(f"resume must be auto or never; got {mode!r}")
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) and cb.dirpath:
            last = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
            if last.is_file():
                log.info("resuming from %s (resume=auto; resume=never starts over)", last)
                return str(last)
    return None


def _print_summary(result: dict[str, Any], out: Path) -> None:
    m = result["metrics"]
    lines = [f"run dir:          {out}"]
    if "test/ppl" in m:
        lines.append(
            f"test  loss/char:  {m['test/loss']:.4f} nats  ({m['test/bpc']:.4f} bits/char, "
            f"perplexity {m['test/ppl']:.3f})"
        )
    for prefix in sorted({k.rsplit("/", 1)[0] for k in m if k.endswith("/cer") and not k.startswith(("val", "train"))}):
        wer = f", WER {100 * m[prefix + '/wer']:.1f} %" if prefix + "/wer" in m else ""
        lines.append(f"{prefix + ' CER:':<17} {100 * m[prefix + '/cer']:.1f} %{wer}")
    if result["best_val_loss"] is not None:
        lines.append(f"best {result.get('monitor', 'val/loss')}: {result['best_val_loss']:.4f} (the checkpoint tested)")
    lines.append(f"best checkpoint:  {result['best_checkpoint']}")
    lines.append(f"wall time:        {result['wall_time_s']} s")
    print("\n".join(lines), flush=True)
