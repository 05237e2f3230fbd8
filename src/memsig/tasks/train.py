"""Train a language model from a composed config, test its best checkpoint, report.

Writes into the run dir: ``checkpoints/`` (best by val/loss and ``last.ckpt``), the
loggers' folders, and ``metrics.json`` (final metrics, best checkpoint, overrides, wall
time) — the file :class:`~memsig.tasks.sweep.SweepSummary` collects after a multirun.
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

from memsig.tasks.utils import instantiate_all, task_overrides, write_json

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (``cfg.train``), then test (``cfg.test``) the model ``cfg`` describes.

    Returns the result written to ``metrics.json``: ``metrics`` (floats by name),
    ``best_checkpoint``, ``last_checkpoint``, ``overrides``, ``wall_time_s``, ``params``.
    """
    start = time.time()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    vocab = hydra.utils.instantiate(cfg.vocab)
    datamodule = hydra.utils.instantiate(cfg.data, vocab=vocab)
    model = hydra.utils.instantiate(cfg.model, vocab=vocab)
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") or None
        last = getattr(ckpt_cb, "last_model_path", "") or None
        if cfg.get("test", True):
            trainer.test(model, datamodule=datamodule, ckpt_path=best if cfg.get("train", True) else cfg.get("ckpt_path"))
        result = {
            "metrics": {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}},
            "best_checkpoint": best,
            "best_val_loss": float(ckpt_cb.best_model_score) if getattr(ckpt_cb, "best_model_score", None) is not None else None,
            "last_checkpoint": last,
            "overrides": task_overrides(),
            "wall_time_s": round(time.time() - start, 1),
            "params": sum(p.numel() for p in model.parameters()),
        }
        if trainer.is_global_zero:
            out = Path(cfg.paths.output_dir)
            write_json(out / "metrics.json", result)
            _print_summary(result, out)
        return result
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()


def _print_summary(result: dict[str, Any], out: Path) -> None:
    m = result["metrics"]
    lines = [f"run dir:          {out}"]
    for stage in ("test",):
        if f"{stage}/loss" in m:
            lines.append(
                f"{stage:<5} loss/char:  {m[f'{stage}/loss']:.4f} nats  "
                f"({m[f'{stage}/bpc']:.4f} bits/char, perplexity {m[f'{stage}/ppl']:.3f})"
            )
    if result["best_val_loss"] is not None:
        lines.append(f"best val loss:    {result['best_val_loss']:.4f} nats/char (the checkpoint tested)")
    lines.append(f"best checkpoint:  {result['best_checkpoint']}")
    lines.append(f"wall time:        {result['wall_time_s']} s")
    print("\n".join(lines), flush=True)
