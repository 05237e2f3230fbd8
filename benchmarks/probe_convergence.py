"""The converged probe against the old fixed-epoch default and against the ridge preview, side by
side in one run (ratios and differences, each measured here).

Model: a trained CharLM (``--ckpt``, default the quick start's ``outputs/quickstart/train``) on the
data of its train run, lags 1…20, its default states, the probe presets of ``conf/probe``.

(a) Wall time of the converged MLP signature (``probe=default`` as configured: states cached into
    a cold cache, decoders trained until each converges, test) ÷ the old default's (as at commit
    959cadd: states streamed from the model, 1,024 positions sampled per batch, 3 epochs,
    ``max_width`` 256, lr 0.002, one seed, the same controls). Goal ≤ 2.0.
(b) Cached states: time of probe epoch 2 ÷ epoch 1 in the converged run, an epoch being the
    positions one old-default epoch trained on (batches × 1,024). Epoch 1 includes building the
    cache (the model's forward pass over every split); epoch 2 reads it. Goal ≤ 0.25.
(c) The ridge preview (``probe=quick`` as configured: every training position, the same controls):
    its speed-up over the converged MLP (goal ≥ 20×), its largest marginal gap to the converged
    MLP at any lag and state (goal ≤ 0.02), its per-symbol agreement (Spearman of recall per
    lag ≤ 5), and its random-init control beside the MLP's.
(d) The converged signature's marginal recall against the old default's, lag by lag.

    python benchmarks/probe_convergence.py [--ckpt outputs/quickstart/train]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf

from memsig.analysis.correlation import spearman
from memsig.models import load_model
from memsig.models.checkpoint import data_config_of_run, resolve_checkpoint
from memsig.probe import MLPProbe, RidgeProbe, Signature
from memsig.probe.multihead import fit_probe
from memsig.resolvers import PROJECT_ROOT

OLD_POSITIONS_PER_BATCH = 1024
OLD_EPOCHS = 3


def preset(name: str) -> dict[str, Any]:
    """A ``conf/probe`` preset's options, resolved as ``probe.py`` would (seed 0)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("probe", overrides=["ckpt=unused", f"probe={name}"])
    options = OmegaConf.to_container(cfg.probe, resolve=True)
    options.pop("_target_")
    return options


class StepClock(L.Callback):
    """perf_counter at the start of training and after every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.times.append(time.perf_counter())


def quiet_trainer(callbacks: list[L.Callback]) -> Any:
    def make(settings: dict[str, Any]) -> L.Trainer:
        return L.Trainer(
            **settings,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=callbacks,
        )

    return make


def old_default(model: Any, dm: Any, options: dict[str, Any]) -> tuple[Signature, float, int]:
    """The old default probe: streamed, 1,024 sampled positions per batch, 3 whole epochs."""
    batches = len(dm.dataset("train"))
    old = {
        **{k: options[k] for k in ("states", "lags", "controls", "target", "seed")},
        "cache": False,
        "positions_per_batch": OLD_POSITIONS_PER_BATCH,
        "max_width": 256,
        "lr": 0.002,
        "seeds": 1,
        "eval_every": batches,  # one dev check per epoch, on every dev position, as then
        "dev_positions": None,
        "patience": 10**6,  # never stops early: 3 epochs
        "max_steps": OLD_EPOCHS * batches,
    }
    start = time.perf_counter()
    sig = MLPProbe(trainer=quiet_trainer([]), **old).fit(model, dm, progress=False)
    return sig, time.perf_counter() - start, batches


def marginal_rows(sigs: dict[str, Signature], state: str) -> None:
    names = list(sigs)
    print(f"{'lag':>4}" + "".join(f"{n:>22}" for n in names))
    first = sigs[names[0]]
    for j, lag in enumerate(first.lags):
        cells = []
        for sig in sigs.values():
            lo, hi = sig.accuracy_ci()
            i = sig.index(state)
            half = f" ±{(hi[i, j] - lo[i, j]) / 2:.3f}" if sig.block_correct is not None else ""
            cells.append(f"{sig.accuracy[i, j]:.3f}{half}")
        print(f"{lag:>4}" + "".join(f"{c:>22}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(PROJECT_ROOT / "outputs" / "quickstart" / "train"))
    ap.add_argument("--lags", type=int, nargs="+", help="lags (default: the presets' 1…20)")
    ap.add_argument("--max-steps", type=int, help="the converged probe's guard (default: the preset's)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "memsig"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ckpt = resolve_checkpoint(args.ckpt)
    model = load_model(ckpt)
    dm = hydra.utils.instantiate(data_config_of_run(ckpt), vocab=model.vocab)
    dm.setup()
    mlp_options = preset("default")
    mlp_options.update(
        {"lags": args.lags or mlp_options["lags"], "max_steps": args.max_steps or mlp_options["max_steps"]}
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {ckpt}")
    print(f"converged probe: {mlp_options}")

    # (a), (b): the converged probe into a cold cache, a clock on every step
    clock = StepClock()
    with tempfile.TemporaryDirectory() as cache:
        module = MLPProbe(**{**mlp_options, "cache_dir": cache}).module(model)
        start = time.perf_counter()
        mlp = fit_probe(module, dm, quiet_trainer([clock])(module.trainer_settings()))
        t_mlp = time.perf_counter() - start
        t_cache = clock.times[0] - start  # the fit builds the cache before its first step
        cache_gib = module.cache_bytes() / 2**30
    print(mlp.provenance())
    old, t_old, batches = old_default(model, dm, mlp_options)
    ratio_a = t_mlp / t_old
    print(
        f"\n(a) converged MLP {t_mlp:.0f} s (cache {t_cache:.0f} s, {cache_gib:.2f} GiB) ÷ old default {t_old:.0f} s "
        f"= {ratio_a:.2f}"
    )
    epoch = math.ceil(batches * OLD_POSITIONS_PER_BATCH / mlp_options["batch_positions"])
    steps = len(clock.times) - 1
    if steps >= 2 * epoch:
        t1 = t_cache + clock.times[epoch] - clock.times[0]
        t2 = clock.times[2 * epoch] - clock.times[epoch]
        ratio_b = t2 / t1
        print(f"(b) epoch = {epoch} steps of {mlp_options['batch_positions']}: epoch 1 {t1:.1f} s, epoch 2 {t2:.1f} s")
    else:
        ratio_b = float("nan")
        print(f"(b) the converged run took {steps} steps, fewer than two epochs of {epoch}")

    # (c): the preview with the same states, lags and controls
    ridge_options = {**preset("quick"), **{k: mlp_options[k] for k in ("states", "lags", "controls")}}
    start = time.perf_counter()
    ridge = RidgeProbe(**ridge_options).fit(model, dm)
    t_ridge = time.perf_counter() - start
    speedup = t_mlp / t_ridge
    gap = max(
        abs(float(ridge.accuracy[ridge.index(s), j] - mlp.accuracy[mlp.index(s), j]))
        for s in mlp.real_states
        for j in range(len(mlp.lags))
    )
    print(f"\n(c) ridge preview {t_ridge:.0f} s: speed-up {speedup:.1f}x; largest marginal gap {gap:.3f}")
    for state in mlp.states:
        print(f"\n{state}: marginal recall, converged MLP vs ridge preview vs old default")
        marginal_rows({"converged MLP": mlp, "ridge preview": ridge, "old default": old}, state)
    print("\nper-symbol agreement (Spearman of recall), ridge vs converged MLP, lags 1-5")
    for state in mlp.real_states:
        rhos = []
        for j in range(min(5, len(mlp.lags))):
            a = ridge.recall[ridge.index(state), j]
            b = mlp.recall[mlp.index(state), j]
            ok = ~np.isnan(a) & ~np.isnan(b)
            rhos.append(spearman(a[ok], b[ok]))
        print(f"{state}: " + "  ".join(f"δ={lag} {r:.3f}" for lag, r in zip(mlp.lags[:5], rhos)))

    print(f"\n{'measure':<52}{'measured':>10}{'goal':>9}  result")
    for what, value, goal, ok in [
        ("(a) converged MLP time / old 3-epoch default", f"{ratio_a:.2f}", "<= 2.0", ratio_a <= 2.0),
        ("(b) cached epoch 2 / epoch 1", f"{ratio_b:.2f}", "<= 0.25", ratio_b <= 0.25),
        ("(c) ridge preview speed-up over converged MLP", f"{speedup:.1f}x", ">= 20x", speedup >= 20),
        ("(c) largest marginal gap, ridge vs converged MLP", f"{gap:.3f}", "<= 0.02", gap <= 0.02),
    ]:
        print(f"{what:<52}{value:>10}{goal:>9}  {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
