"""Probe a trained model's memory: states -> decoders -> signature -> figures (-> W&B).

Writes into the run dir: ``signature.npz`` (:class:`~memsig.probe.signature.Signature`),
``figures/`` (per-state heatmaps, marginal recall curves; PNG and SVG), ``report.html``
(:mod:`memsig.report`: the interactive page, also logged to W&B), the probe's
``checkpoints/`` (resume with ``probe_ckpt=...``) and the loggers' folders. With the
wandb logger the heatmaps are logged as images and the signature file plus figures as
an artifact of type ``signature``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from memsig.data.io import sha256_of
from memsig.data.text import TextDataModule
from memsig.models.checkpoint import data_config_for, load_model, resolve_checkpoint
from memsig.probe.multihead import unconverged_heads
from memsig.probe.probes import MLPProbe, Probe
from memsig.probe.signature import Signature
from memsig.report import log_report, write_report
from memsig.tasks.rundir import claim_run_dir
from memsig.tasks.utils import instantiate_all, task_overrides, write_json

log = logging.getLogger(__name__)


def refuse_vocab(cfg: DictConfig, ckpt: Path) -> None:
    """A probe or export reads the vocab from the checkpoint: a vocab override is an error."""
    if cfg.get("vocab") is not None:
        raise ValueError(
            f"the symbol set comes from the checkpoint ({ckpt}); drop the vocab override (+vocab...): a probe "
            "or export reads text with the model's own vocab"
        )


def without_augmentation(datamodule: Any) -> Any:
    """The datamodule with training-time augmentation off (a speech DataModule's
    ``spec_augment``): a probe reads the data as it is."""
    if getattr(datamodule, "spec_augment", None) is not None:
        datamodule.spec_augment = None
    return datamodule


def source_meta(model: Any, ckpt: str | Path, data_cfg: DictConfig) -> dict[str, Any]:
    """What a signature records of its model: class and hyper-parameters, checkpoint and hash,
    data config, split, and the model's own line per state (``state_notes()``, e.g. a speech
    encoder layer's frame rate and the audio one frame sees) where it offers them."""
    notes = model.state_notes() if hasattr(model, "state_notes") else {}
    return {
        "model": {"class": type(model).__name__, **dict(getattr(model, "hparams", {}))},
        "checkpoint": str(ckpt),
        "checkpoint_sha256": sha256_of(ckpt),
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "split": "test",
        "state_notes": notes,
    }


def write_figures(sig: Signature, folder: Path, formats: list[str], confusion_lags: Sequence[int] = ()) -> list[Path]:
    """Heatmap per probed real state, all real states side by side on one scale (when there are
    several), marginal curves of all states (controls dashed), the confusion matrix of each real
    state at each of ``confusion_lags``, and, when the signature has the baseline's ``given:``
    decoders, the memory beyond inference in bits (``memory_beyond_inference``)."""
    from memsig.plots import (
        conditional_memory,
        confusion_plot,
        marginal_curves,
        save_figure,
        side_by_side,
        signature_heatmap,
    )

    paths = []
    for state in sig.real_states:
        name = state.replace("+", "_")
        note = sig.meta.get("state_notes", {}).get(state)
        paths += save_figure(signature_heatmap(sig, state, note), folder / f"heatmap_{name}", formats)
        for lag in confusion_lags:
            paths += save_figure(confusion_plot(sig, state, lag), folder / f"confusion_{name}_lag{lag}", formats)
    if len(sig.real_states) > 1:
        states = {s: s for s in sig.real_states}
        paths += save_figure(side_by_side(dict.fromkeys(states, sig), states), folder / "states_side_by_side", formats)
    paths += save_figure(marginal_curves(sig), folder / "marginal_recall", formats)
    if sig.given_states:
        paths += save_figure(conditional_memory(sig), folder / "memory_beyond_inference", formats)
    return paths


def write_gradients(
    settings: DictConfig, model: Any, datamodule: TextDataModule, sig: Signature, out: Path, formats: list[str]
) -> tuple[dict[str, Any], list[Path]]:
    """State gradients of the signature's states (``conf/gradients``): ``gradients.npz`` with their
    correlation to the signature's recall in ``meta["correlation"]``, and one figure per state.
    Returns that correlation and the figures."""
    from memsig.analysis.state_gradients import correlate, state_gradients
    from memsig.plots import gradient_figure, save_figure
    from memsig.states import GradientSource

    if not isinstance(model, GradientSource):
        raise TypeError(
            f"{type(model).__name__} exposes no input embedding (embed, embedded_states; see "
            "memsig.states.GradientSource): state gradients need it; run without gradients=..."
        )
    states = list(settings.states or dict.fromkeys(p for s in sig.real_states for p in s.split("+")))
    grad = state_gradients(
        model,
        datamodule.ids(settings.split),
        settings.lags,
        settings.positions,
        settings.batch,
        settings.warmup,
        settings.chunk,
        states,
        seed=int(sig.meta.get("seed", 0)),
        mode=settings.get("mode", "auto"),
        progress=True,
    )
    grad.meta.update(
        split=settings.split,
        checkpoint=sig.meta.get("checkpoint"),
        checkpoint_sha256=sig.meta.get("checkpoint_sha256"),
        correlation=correlate(grad, sig),
    )
    figures = [
        p
        for s in grad.states
        for p in save_figure(gradient_figure(grad, s), out / "figures" / f"gradients_{s.replace('.', '_')}", formats)
    ]
    grad.save(out / "gradients.npz")
    return grad.meta["correlation"], figures


def write_baseline(
    settings: DictConfig | None, datamodule: Any, sig: Signature, out: Path, formats: list[str], figures: Path
) -> tuple[Signature | None, list[Path]]:
    """The backward-context baseline beside a signature of text symbols (``baseline`` in
    ``conf/probe.yaml``, ``signature.baseline`` in ``conf/train.yaml``; :mod:`memsig.probe.backward`):
    ``out/baseline.npz`` on the signature's lags and test blocks, and in ``figures`` its heatmap and
    per real state the recall, the baseline and the lift (signature − baseline) side by side. The
    baseline the probe already scored as its state ``backward`` serves when its order is
    ``settings.order``; otherwise it is fitted here. ``(None, [])`` for other data or targets, or
    with a null ``settings``."""
    from memsig.plots import memory_and_inference, save_figure, signature_heatmap
    from memsig.probe.backward import STATE, backward_baseline, reads_text, scored_baseline

    probe = sig.meta.get("probe", {})
    if not settings or not reads_text(datamodule) or probe.get("target", "symbol") != "symbol":
        return None, []
    meta = {key: sig.meta[key] for key in ("data", "split", "checkpoint") if key in sig.meta}
    base = scored_baseline(sig, settings.order, meta) or backward_baseline(
        datamodule, sig.lags, settings.order, probe.get("block_len", 256), meta
    )
    base.save(out / "baseline.npz")
    note = f"x_(t−δ) from the {base.meta['probe']['order'] - 1} or fewer symbols after it, no state"
    paths = save_figure(signature_heatmap(base, STATE, note), figures / "heatmap_baseline", formats)
    for state in sig.real_states:
        lift = memory_and_inference(sig, base, state)
        paths += save_figure(lift, figures / f"lift_{state.replace('+', '_')}", formats)
    return base, paths


def log_to_wandb(loggers: list[Any], sig_path: Path, figures: list[Path]) -> None:
    """Heatmaps as images and signature + figures as a ``signature`` artifact, if wandb logs."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        import wandb

        run = lg.experiment
        run.log({f"signature/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"})
        art = wandb.Artifact(f"signature-{run.id}", type="signature", metadata={"file": sig_path.name})
        for p in [sig_path, *figures]:
            art.add_file(str(p), name=p.name if p == sig_path else f"figures/{p.name}")
        run.log_artifact(art)


def build_probe(cfg: DictConfig, probe_cfg: DictConfig, loggers: list[Any] | None) -> Probe:
    """The probe of ``probe_cfg`` (``_target_``: a :mod:`memsig.probe.probes` class). An MLP probe
    trains with ``cfg.trainer`` plus, for the run's own probe, ``cfg.callbacks`` and ``loggers``
    (None: a re-run, without loggers, callbacks or checkpoints)."""
    probe_ = hydra.utils.instantiate(probe_cfg)
    if isinstance(probe_, MLPProbe):
        if loggers is None:
            extra: dict[str, Any] = {"logger": False, "enable_checkpointing": False, "callbacks": []}
        else:
            extra = {"logger": loggers or False, "callbacks": instantiate_all(cfg.get("callbacks"))}
        probe_.trainer = lambda settings: hydra.utils.instantiate(cfg.trainer, **extra, **settings)
    return probe_


def convergence_warning(sig: Signature) -> str:
    """The warning ``probe.py`` prints under a signature whose decoders did not all converge."""
    heads = unconverged_heads(sig)
    return (
        f"WARNING: {len(heads)} heads did not converge: {', '.join(heads)}. Their recall is a lower bound: "
        "raise probe.max_steps or trainer.max_time"
    )


def probe_resume(cfg: DictConfig, probe_: Probe, out: Path, interrupted: bool) -> dict[str, str]:
    """``fit``'s ``ckpt_path``: ``cfg.probe_ckpt`` when set, else the ``last.ckpt`` an interrupted
    probe of this run dir left (``{}``: start afresh)."""
    last = out / "checkpoints" / "last.ckpt"
    ckpt = cfg.get("probe_ckpt") or (last if interrupted and last.is_file() else None)
    if ckpt is None:
        return {}
    if not isinstance(probe_, MLPProbe):
        raise ValueError("probe_ckpt resumes a trained (MLP) probe; the ridge preview has nothing to resume")
    log.info("resuming the probe from %s", ckpt)
    return {"ckpt_path": str(ckpt)}


def noise_floor(
    cfg: DictConfig, model: Any, datamodule: TextDataModule, sig: Signature, out: Path
) -> dict[str, list[float]]:
    """Re-run the probe with ``cfg.noise_floor_seed``; the distance to ``sig`` per real state.

    This is the distance that probe randomness alone produces (position sampling, head
    initialisation): two signatures closer than it are indistinguishable. The re-run's
    signature is saved as ``signature_seed<seed>.npz``.
    """
    from memsig.analysis.distance import bootstrap_distance

    seed = int(cfg.noise_floor_seed)
    L.seed_everything(seed, workers=True)
    rerun = build_probe(cfg, OmegaConf.merge(cfg.probe, {"seed": seed}), None).fit(model, datamodule)
    rerun.save(out / f"signature_seed{seed}.npz")
    return {s: list(bootstrap_distance(sig, rerun, s)) for s in sig.real_states}


def conditional_bits(sig: Signature) -> dict[str, dict[str, Any]]:
    """Per state with a ``given:`` decoder: its memory beyond inference per lag and summed
    (:meth:`~memsig.probe.signature.Signature.conditional_bits`), rounded for probe.json."""
    out = {}
    for state in sig.given_states:
        bits = sig.conditional_bits(state)
        out[state] = {
            key: round(float(bits[key]), 4) if np.ndim(bits[key]) == 0 else [round(float(x), 4) for x in bits[key]]
            for key in ("bits", "low", "high", "total", "total_low", "total_high")
        }
    return out


def probe(cfg: DictConfig) -> dict[str, Any]:
    """Run the probe task described by ``cfg`` (see ``conf/probe.yaml``) in its claimed run dir
    (:mod:`memsig.tasks.rundir`: a probe interrupted there resumes from its last check)."""
    start = time.time()
    interrupted = claim_run_dir(cfg, "probe.json")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    L.seed_everything(cfg.seed, workers=True)
    ckpt = resolve_checkpoint(str(cfg.ckpt))
    refuse_vocab(cfg, ckpt)
    model = load_model(ckpt)
    data_cfg = data_config_for(cfg.get("data"), ckpt)
    with open_dict(cfg):
        cfg.data = data_cfg  # resolved against this run's paths
    datamodule = without_augmentation(hydra.utils.instantiate(cfg.data, vocab=model.vocab))
    out = Path(cfg.paths.output_dir)
    meta = {**source_meta(model, ckpt, cfg.data), "seed": cfg.seed}
    loggers = instantiate_all(cfg.get("logger"))
    try:
        probe_ = build_probe(cfg, cfg.probe, loggers)
        sig = probe_.fit(model, datamodule, meta=meta, **probe_resume(cfg, probe_, out, interrupted))
        if cfg.get("noise_floor_seed") is not None:
            sig.meta["noise_floor"] = noise_floor(cfg, model, datamodule, sig, out)
        sig_path = sig.save(out / "signature.npz")
        figures = write_figures(sig, out / "figures", list(cfg.plot_formats), list(cfg.get("confusion_lags") or []))
        baseline, baseline_figures = write_baseline(
            cfg.get("baseline"), datamodule, sig, out, list(cfg.plot_formats), out / "figures"
        )
        figures += baseline_figures
        correlation = None
        if cfg.get("gradients"):
            correlation, grad_figures = write_gradients(
                cfg.gradients, model, datamodule, sig, out, list(cfg.plot_formats)
            )
            figures += grad_figures
        log_to_wandb(loggers, sig_path, figures)
        result = {
            "signature": str(sig_path),
            "baseline": str(out / "baseline.npz") if baseline is not None else None,
            "gradient_correlation": correlation,
            "figures": [str(p) for p in figures],
            "overrides": task_overrides(),
            "accuracy": {  # null: a lag without test positions
                s: [None if np.isnan(a) else round(float(a), 4) for a in sig.accuracy[i]]
                for i, s in enumerate(sig.states)
            },
            "lags": sig.lags,
            "conditional_bits": conditional_bits(sig),
            "noise_floor": sig.meta.get("noise_floor"),
            "wall_time_s": round(time.time() - start, 1),
        }
        if rank_zero_only.rank == 0:
            write_json(out / "probe.json", result)
            report = write_report(out)
            log_report(loggers, report)
            floor = "".join(
                f"\nnoise floor {s}: {d:.4f} [{lo:.4f}, {hi:.4f}] (distance to a re-run, seed {cfg.noise_floor_seed})"
                for s, (d, lo, hi) in (result["noise_floor"] or {}).items()
            )
            rho = "".join(
                f"\nstate gradients {s}: Spearman ρ with recall across lags {c['across_lags']:.3f}, across "
                f"symbols {c['mean_per_lag']:.3f} (mean over lags)"
                for s, c in (correlation or {}).items()
            )
            warn = f"\n{convergence_warning(sig)}" if unconverged_heads(sig) else ""
            cache = sig.meta.get("state_cache")
            cached = (
                f"\nstate cache: {cache['bytes'] / 2**30:.2f} GiB in {Path(cache['folders'][0]).parent}"
                if cache
                else ""
            )
            lift = (
                f"\nwhat the later symbols alone imply (the signature minus it: the lift, figures/lift_*):\n"
                f"{baseline.table()}"
                if baseline is not None
                else ""
            )
            memory = sig.memory_table()
            lift += f"\n{memory}" if memory else ""
            print(
                f"marginal recall per lag (test split):\n{sig.table()}{lift}{floor}{rho}{warn}{cached}\n"
                f"signature:  {sig_path}\nfigures:    {out / 'figures'}\nreport:     {report}\n"
                f"wall time:  {result['wall_time_s']} s",
                flush=True,
            )
        return result
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()
