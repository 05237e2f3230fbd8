"""Tiny probe runs, train runs and a multirun on disk, built from synthetic signatures (no training).

A helper module, not a conftest: a second ``conftest`` module would shadow ``tests/conftest.py``
for the modules that import from it. Tests call these writers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memsig.data.io import sha256_of
from memsig.probe.signature import Signature

SYMBOLS = ["␣", "a", "b", "c", "d", "q"]  # 'q' is rare: below min_support, NaN in the signature
LAGS = [1, 2, 3, 4, 5, 6]
STATES = ["layer1.c", "layer2.c"]
SUPPORT = [400, 150, 150, 120, 100, 8]  # test positions per symbol; space is the majority class


def make_signature(memory: float = 3.0, seed: int = 0, meta: dict | None = None) -> Signature:
    """Recall falling with the lag (slower for a larger ``memory``), plus both controls.

    ``random:`` recalls less, ``shuffled:`` always answers the majority symbol (space).
    """
    rng = np.random.default_rng(seed)
    c = len(SYMBOLS)
    states = [*STATES, *(f"random:{s}" for s in STATES), *(f"shuffled:{s}" for s in STATES)]
    conf = np.zeros((len(states), len(LAGS), c, c), dtype=np.int64)
    for i, state in enumerate(states):
        for k, lag in enumerate(LAGS):
            for t, n in enumerate(SUPPORT):
                if state.startswith("shuffled:"):
                    conf[i, k, t, 0] = n
                    continue
                depth = memory * (0.6 if state.startswith("random:") else 1.0) * (1 + 0.3 * (i % 2))
                p = float(np.clip(np.exp(-(lag - 1) / depth) + rng.normal(0, 0.03), 0.05, 1.0))
                hits = rng.binomial(n, p)
                conf[i, k, t] = rng.multinomial(n - hits, np.full(c, 1 / c))
                conf[i, k, t, t] += hits
    prior = np.array(SUPPORT, float) / sum(SUPPORT)
    forward = (np.diag(SUPPORT) * 0.7).astype(np.int64) + 3
    ce = rng.uniform(0.5, 2.0, (len(states), len(LAGS)))
    return Signature(states, list(LAGS), list(SYMBOLS), conf, ce, prior, forward, meta or {})


def conditional_bits_per_lag(state: str) -> np.ndarray:
    """The bits beyond inference :func:`with_conditional` builds into ``state`` (per lag, every symbol)."""
    if state.startswith("shuffled:"):
        return np.zeros(len(LAGS))
    scale = 1.5 if state == STATES[0] else 0.8
    return scale * np.exp(-(np.array(LAGS) - 1) / 2.0)


def with_conditional(sig: Signature, seeds: int = 2, blocks: int = 4) -> Signature:
    """``sig`` (its real and shuffled states) plus the backward-context baseline (``backward``) and a
    ``given:`` decoder of each, with per-block counts and cross-entropy for ``seeds`` probe seeds.

    The baseline costs 1 nat per position; ``given:<state>`` saves :func:`conditional_bits_per_lag`
    bits on every position, up and down by 5 % between seeds and 10 % between blocks (symmetric, so
    the means are exact and the intervals are not empty)."""
    kept = [s for s in sig.states if not s.startswith("random:")]
    given = [f"given:{s}" for s in kept]
    states = [*kept, "backward", *given]
    rows = [sig.index(s) for s in kept] + [sig.index(f"shuffled:{STATES[0]}")] + [sig.index(s) for s in kept]
    conf = sig.confusion[rows]  # [S, K, C, C] one seed's counts
    support = conf.sum(-1)  # [S, K, C]
    correct = np.diagonal(conf, axis1=-2, axis2=-1)
    block_support = np.stack([support // blocks] * (blocks - 1) + [support - (blocks - 1) * (support // blocks)])
    block_correct = np.stack([correct // blocks] * (blocks - 1) + [correct - (blocks - 1) * (correct // blocks)])
    block_correct = np.repeat(block_correct[None], seeds, 0)  # [R, B, S, K, C]
    nll = np.repeat(block_support[None].astype(float), seeds, 0)  # 1 nat per position
    for state in given:
        saved = conditional_bits_per_lag(state.removeprefix("given:")) * np.log(2)  # nats per position
        for r in range(seeds):
            for b in range(blocks):
                wiggle = 1 + 0.05 * (-1) ** r + 0.1 * (b - (blocks - 1) / 2)
                nll[r, b, states.index(state)] -= block_support[b, states.index(state)] * (saved * wiggle)[:, None]
    ce = np.nan_to_num(sig.ce_bits[rows])
    return Signature(
        states,
        list(sig.lags),
        list(sig.symbols),
        conf * seeds,
        ce,
        sig.prior,
        sig.forward_confusion,
        dict(sig.meta),
        sig.min_support,
        seeds,
        block_correct,
        block_support,
        nll,
    )


def write_train_run(
    run: Path, memory: float = 3.0, seed: int = 0, overrides: list[str] | None = None, variants: tuple[str, ...] = ()
) -> Path:
    """A train run as ``train.py`` leaves it: a checkpoint, ``signatures/main.npz`` (+ variants), metrics.json."""
    ckpt = run / "checkpoints" / "epoch_002-val_loss_1.4000.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(f"weights {seed}".encode())
    meta = {
        "model": {
            "class": "CharLM",
            "cell": "lstm",
            "num_layers": 2,
            "hidden_size": 32,
            "embedding_size": 8,
            "vocab": {"symbols": " abcdq", "oov": "drop"},
        },
        "checkpoint": str(ckpt),
        "checkpoint_sha256": sha256_of(ckpt),
        "split": "test",
        "seed": seed,
        "data": {
            "batch_size": 16,
            "corpus": {
                "name": "tinyshakespeare",
                "path": "/data/tinyshakespeare.txt",
                "url": "https://example.org/tiny.txt",
            },
        },
        "probe": {"kind": "ridge", "lags": LAGS, "features": 64},
    }
    signatures = {}
    for j, name in enumerate(("main", *variants)):
        signatures[name] = str(make_signature(memory + j, seed + j, meta).save(run / "signatures" / f"{name}.npz"))
    metrics = {
        "val/loss": 1.4 - 0.01 * seed,
        "val/ppl": 4.055,
        "val/bpc": 2.0198,
        "test/loss": 1.4845,
        "test/ppl": 4.413,
        "test/bpc": 2.142,
    }
    result = {
        "metrics": metrics,
        "best_checkpoint": str(ckpt),
        "best_val_loss": 1.4,
        "signatures": signatures,
        "overrides": overrides or [],
        "params": 12345,
        "wall_time_s": 12.5,
    }
    (run / "metrics.json").write_text(json.dumps(result))
    return run


def write_probe_run(root: Path, conditional: bool = False) -> Path:
    """``root/outputs/probe``: a probe run of ``root/outputs/train``'s checkpoint, with the checkpoint path
    relative to ``root`` as probe.py records it (relative to where it ran), a noise floor and a
    backward-context baseline; with ``conditional`` its signature holds the baseline's decoders
    (:func:`with_conditional`: memory beyond inference)."""
    train = write_train_run(root / "outputs" / "train")
    main = Signature.load(train / "signatures" / "main.npz")
    if conditional:
        main = with_conditional(main)
    main.meta["checkpoint"] = str(Path(main.meta["checkpoint"]).relative_to(root))
    main.meta["noise_floor"] = {state: [0.01 + 0.002 * i, 0.008, 0.015] for i, state in enumerate(STATES)}
    run = root / "outputs" / "probe"
    main.save(run / "signature.npz")
    base = make_signature(memory=1.0, seed=7)  # the later symbols imply less than the states recall
    kind = {"kind": "backward_context", "order": 8, "later_symbols": [min(lag, 7) for lag in LAGS]}
    Signature(
        ["backward"], base.lags, base.symbols, base.confusion[:1], base.ce_bits[:1], base.prior, meta={"probe": kind}
    ).save(run / "baseline.npz")
    (run / "probe.json").write_text(json.dumps({"wall_time_s": 3.2}))
    return run


def write_sweep(root: Path) -> Path:
    """``root/sweep``: a multirun of two models (hidden size 32 and 64)."""
    for job, (size, memory) in enumerate(((32, 2.0), (64, 4.0))):
        write_train_run(root / "sweep" / str(job), memory, job, [f"model.hidden_size={size}", "experiment=toy"])
    return root / "sweep"


def write_gradients(run: Path, sig: Signature) -> None:
    """``gradients.npz`` of the real :class:`GradientMemory` (its correlation with ``sig`` in meta)."""
    sg = pytest.importorskip("memsig.analysis.state_gradients")
    rng = np.random.default_rng(0)
    s, k, c = len(STATES), len(LAGS), len(SYMBOLS)
    decay = np.exp(-np.arange(k) / 2.0)[None, :, None]
    svals = np.sort(rng.uniform(0.1, 1.0, (s, k, 4)), -1)[..., ::-1] * decay
    support = np.broadcast_to(np.array(SUPPORT) // 4, (s, k, c)).copy()  # 'q': 2 positions, NaN
    norm_sum = support * decay * rng.uniform(0.5, 1.5, (s, k, c))
    grad = sg.GradientMemory(
        states=list(STATES),
        lags=list(LAGS),
        symbols=list(SYMBOLS),
        singular_values=svals,
        norm=svals.sum(-1),
        norm_sum=norm_sum,
        support=support,
        meta={},
    )
    grad.meta["correlation"] = sg.correlate(grad, sig)
    grad.save(run / "gradients.npz")
