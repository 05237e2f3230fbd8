"""Quick memory signature: closed-form ridge decoders on random ReLU features of the state.

A preview of the signature (:class:`~memsig.probe.probes.RidgeProbe`), in one pass instead of
the MLP probe's training run (:class:`~memsig.probe.multihead.MultiHeadProbe`). The decoder of
lag δ is linear in a fixed feature map ``φ(x) = [z, relu(z·R + b), 1]`` of the state ``x`` (``z`` standardised
by the first training batch, ``R`` ``[D, P]`` random Gaussian, ``b`` random offsets), i.e.
kernel ridge regression with P random features: a non-linear decoder, solved in closed
form. ``features=0`` gives the plain linear ridge decoder on ``[z, 1]``. Three streaming
passes, each reading the split's batches in order (so the source carries its state exactly
as in training):

1. **train** — per probed state, moments of ``φ`` over at most ``train_positions`` sampled
   real positions per batch (per-batch products in float32, sums in float64): one shared
   Gram ``G = Σ φφᵀ``, the cross moments ``Φᵀ Y_δ`` (one-hot targets) of every lag, and one
   small correction per positive lag: with the positive lags sorted ``δ_1 < δ_2 < …`` (δ_0 = 0),
   ``E_i`` = Gram of the sampled positions with ``δ_{i-1} ≤ history < δ_i`` (only the first
   positions of each stream/segment); likewise ``E⁻_i`` per negative lag over the real
   positions after t in the window. ``G_δ = G − Σ_{δ_i ≤ δ} E_i`` (``G − Σ_{δ_i ≤ |δ|} E⁻_i``
   for δ < 0) is then exactly the Gram of lag δ's positions, whatever the lag's size; each
   batch checks that these are the positions :func:`~memsig.probe.targets.lag_targets`
   marks valid (padding only at row ends).
2. **solve** — ``W_δ(λ) = (G_δ + λ'·I')⁻¹ Φᵀ Y_δ`` with an unpenalised bias, done as ridge on
   centred features: one Cholesky factorisation per (state, lag, λ). λ is scale-free:
   ``λ' = λ · trace(S_δ) / D'``, S_δ the centred Gram (the penalised block).
3. **dev** — on a sample of at most 2048 positions per batch, every λ is scored at once (one
   float32 GEMM for all lags and λ) and chosen per (state, lag) by accuracy (argmax of
   ``φW``). Least squares on one-hot targets under-scores rare symbols, so the chosen scores
   are calibrated: a scale and an offset per symbol (:func:`vector_scaling`, damped Newton on
   the cross-entropy of up to 8192 held-out dev positions, whose states the pass keeps). The
   calibrated logits ``a ⊙ φW + b`` give the argmax (recall) and the cross-entropy.
   **test** — every test position: confusion matrices and cross-entropy with the chosen λ
   and calibration, plus the model's own next-symbol confusion when the source gives ``next_logits``.

Memory holds only the moments (``[D'+1, D'+1]`` per state, plus about two per lag, ``D' = D + P``:
:func:`ridge_bytes`, checked before anything is allocated) and the calibration sample (at
most 8192 states per probed state); nothing grows with the corpus or with a lag's size.
``controls`` adds the ``random``/``shuffled`` control states, probed alike
(:class:`~memsig.probe.controls.ControlledSource`).

When to trust it: as a preview — where memory fades, which lags and layers keep more, and
which symbols are kept better than others at a lag. Its distance from the converged MLP probe
(:class:`~memsig.probe.probes.MLPProbe`) is measured by ``benchmarks/probe_convergence.py``
(results: ``docs/probing.md``). With ``features=0`` (linear) it underestimates recall that the
state holds non-linearly; with ``calibrate=False`` it under-recalls rare symbols.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.probe.cache import source_device
from memsig.probe.controls import ControlledSource, check_controls, control_spec, state_parts
from memsig.probe.signature import Signature
from memsig.probe.targets import (
    LeftContext,
    check_lag_reach,
    confusion_counts,
    label_prior,
    lag_targets,
    next_symbol_counts,
    resolve_probe,
)
from memsig.states import StateBatch, StateSource

F64 = torch.float64
DEV_SAMPLE = 2048  # dev positions per batch that choose λ ...
CALIBRATION_SAMPLE = 1024  # ... and, of those, the states kept to fit the calibration,
CALIBRATION_MAX = 8192  # at most this many in all
BACKTRACKS = 8  # Newton step quartered at most this often per iteration
INITIAL_SCALES = tuple(2.0**i for i in range(8))  # Newton starts from the best a = β, b = 0


class ReLUFeatures:
    """The fixed feature map ``φ(x) = [z, relu(z·R + b), 1]`` ``[N, D] → [N, D + P + 1]`` (float32).

    ``z = (x − mean) / std`` with the statistics of ``x`` (``[N, D]``, real positions of the
    first training batch; a column constant there is only centred); ``R`` ``[D, P]`` has N(0, 1/D) entries (so ``z·R`` is about unit
    variance) and ``b`` ``[P]`` N(0, 1/4) entries, drawn from ``seed``.
    """

    def __init__(self, x: Tensor, size: int, seed: int) -> None:
        x = x.float()
        d = x.shape[1]
        std = x.std(0).nan_to_num(0.0)
        self.mean, self.std = x.mean(0), torch.where(std > 1e-6, std, 1.0)  # constant there: left unscaled
        gen = torch.Generator().manual_seed(seed)
        self.proj = (torch.randn(d, size, generator=gen) / math.sqrt(d)).to(x.device)
        self.bias = (0.5 * torch.randn(size, generator=gen)).to(x.device)

    def __call__(self, x: Tensor) -> Tensor:
        z = (x.float() - self.mean) / self.std
        return torch.cat([z, torch.relu(z @ self.proj + self.bias), z.new_ones(len(z), 1)], -1)


def ridge_bytes(dims: Sequence[int], lags: Sequence[int], num_classes: int, strengths: int) -> int:
    """Bytes the ridge preview's moments and solutions take at their peak (float64), for probed
    states of ``dims`` features each (``D + P``): per state the shared Gram, one correction per
    nonzero lag, each lag's Gram (and its temporary), the cross moments and the solutions of
    every λ (module docstring)."""
    k, corrections = len(lags), sum(lag != 0 for lag in lags)
    return 8 * sum(
        (1 + corrections + 2 * k) * (d + 1) ** 2 + (d + 1) * k * num_classes * (1 + 2 * strengths) for d in dims
    )


def free_bytes(device: torch.device) -> int:
    """Memory free on ``device``: the GPU's free memory, or the machine's available memory
    (``MemAvailable``; its physical memory where ``/proc/meminfo`` is missing)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _batches(
    source: StateSource, datamodule: Any, split: str, lags: list[int], common: bool, max_batches: int | None
) -> Iterator[tuple[StateBatch, Tensor, Tensor]]:
    """The first ``max_batches`` batches of a split in order: states, targets and validity ``[B·T, K]``."""
    device = source_device(source)
    if isinstance(source, nn.Module):
        source.eval()
    data = datamodule.dataset(split)
    context = LeftContext(max(0, max(lags)))
    for i in range(len(data) if max_batches is None else min(len(data), max_batches)):
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in data[i].items()}
        sb = source.states(batch)
        ext = context.extend(split, sb.symbols, bool(batch["carry"]))
        targets, valid = lag_targets(ext, sb.history, sb.mask, lags, common)
        yield sb, targets.flatten(0, 1), valid.flatten(0, 1)


def join_ranks() -> None:
    """Join the process group of the ranks ``torchrun`` started (``WORLD_SIZE`` > 1 in the
    environment; gloo), once; a process started alone stays alone. The group is destroyed at exit
    (as Lightning does for its own): left to interpreter shutdown, gloo's worker threads can abort
    the process (SIGABRT, "terminate called without an active exception") after its work is done."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(_leave_ranks)


def _leave_ranks() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def ranks() -> tuple[int, int]:
    """This process's rank and the number of ranks: torch.distributed's once its process group is
    initialised, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _summed(t: Tensor) -> Tensor:
    """``t`` summed over the ranks (itself on one process): the same tensor on every rank."""
    if ranks()[1] == 1:
        return t
    on = t.cpu()  # gloo
    dist.all_reduce(on)
    return on.to(t.device)


def _share(idx: Tensor) -> Tensor:
    """This rank's share ``[≈N / ranks]`` of the positions ``idx`` ``[N]`` (all of them on one process)."""
    rank, world = ranks()
    return idx[rank::world]


def _state(sb: StateBatch, spec: str) -> Tensor:
    """``[B·T, D]`` the probed state (parts of ``a+b`` concatenated; ``random:a+b``: of the control)."""
    return torch.cat([sb.states[p] for p in state_parts(spec)], -1).flatten(0, 1)


def _sample(n: int, size: int | None, gen: torch.Generator, device: torch.device) -> Tensor:
    """``[n]`` bool: ``size`` positions drawn without replacement (all if ``size`` is None or ≥ n)."""
    keep = torch.ones(n, dtype=torch.bool)
    if size is not None and size < n:
        keep[torch.randperm(n, generator=gen)[size:]] = False
    return keep.to(device)


def train_moments(
    source: StateSource,
    datamodule: Any,
    states: Sequence[str] | None = None,
    lags: Sequence[int] | None = None,
    max_batches: int | None = None,
    features: int = 0,
    train_positions: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, ReLUFeatures]]:
    """One pass over train: per state, the Gram ``[K, D'+1, D'+1]`` and cross moment ``[K, D'+1, C]``
    of each lag in feature space, and the feature maps (:class:`ReLUFeatures` with ``features``
    random features, fitted on the first batch).

    The per-lag Grams come from the shared Gram minus the corrections (module docstring), over
    at most ``train_positions`` sampled real positions per batch.
    Raises ValueError if a batch pads inside a row (the corrections assume trailing padding).
    """
    states, lags = resolve_probe(source, states, lags)
    c, k = len(source.vocab), len(lags)
    back = torch.tensor(sorted(lag for lag in lags if lag > 0), dtype=torch.long)  # correction edges (docstring)
    ahead = torch.tensor(sorted(-lag for lag in lags if lag < 0), dtype=torch.long)
    excluded = torch.tensor(  # [K, J]: lag k leaves out correction j (the positive lags', then the negative's)
        [
            [lag > 0 and e <= lag for e in back.tolist()] + [lag < 0 and e <= -lag for e in ahead.tolist()]
            for lag in lags
        ],
        dtype=F64,
    )
    gen = torch.Generator().manual_seed(seed)
    phi: dict[str, ReLUFeatures] = {}
    gram: dict[str, Tensor] = {}
    corr: dict[str, Tensor] = {}
    cross: dict[str, Tensor] = {}
    for sb, y, v in _batches(source, datamodule, "train", lags, False, max_batches):
        m, hist = sb.mask.flatten(), sb.history.flatten()
        after = (sb.mask.flip(1).cumsum(1).flip(1) - sb.mask.long()).flatten()  # real positions after t
        if not torch.equal(v, torch.stack([m & (hist >= l if l > 0 else after >= -l) for l in lags], -1)):
            raise ValueError("quick_signature needs padding only at the end of each row")
        idx = m.nonzero().squeeze(1)
        idx = idx[_sample(len(idx), train_positions, gen, idx.device)]  # the sampled real positions
        mine = _share(idx)  # this rank's part of the moments (every rank draws the same sample)
        hist, after, y, v = hist[mine], after[mine], y[mine], v[mine]
        below = torch.searchsorted(back.to(hist.device), hist, right=True)  # i: δ_{i-1} ≤ history < δ_i
        short = torch.searchsorted(ahead.to(after.device), after, right=True)
        levels = [below == i for i in range(len(back))] + [short == i for i in range(len(ahead))]
        onehot = (F.one_hot(y, c).float() * v[..., None]).flatten(1)  # [N, K·C]
        for s in states:
            x = _state(sb, s)
            if s not in phi:
                phi[s] = ReLUFeatures(x[idx], features, seed)
            f = phi[s](x[mine])
            d = f.shape[1]
            if s not in gram:
                gram[s], corr[s], cross[s] = (
                    torch.zeros(d, d, dtype=F64, device=f.device),
                    torch.zeros(len(back) + len(ahead), d, d, dtype=F64, device=f.device),
                    torch.zeros(d, k * c, dtype=F64, device=f.device),
                )
            gram[s] += (f.T @ f).double()
            cross[s] += (f.T @ onehot).double()
            for jj, sel in enumerate(levels):
                if sel.any():
                    corr[s][jj] += (f[sel].T @ f[sel]).double()
    for moment in (gram, corr, cross):  # over every rank's positions
        moment.update({s: _summed(m) for s, m in moment.items()})
    moments = {
        s: (
            gram[s] - torch.einsum("kj,jde->kde", excluded.to(gram[s].device), corr[s]),
            cross[s].view(-1, k, c).transpose(0, 1),
        )
        for s in states
    }
    return moments, phi


def ridge_weights(gram: Tensor, cross: Tensor, ridge: Sequence[float]) -> Tensor:
    """``[K, L, D+1, C]`` ridge solutions for every lag and λ (bias row last, unpenalised).

    Args:
        gram: ``[K, D+1, D+1]`` per-lag Gram of ``[x, 1]``; cross: ``[K, D+1, C]``.
        ridge: L relative strengths (> 0); λ' = λ · trace(centred Gram) / D.
    """
    if min(ridge) <= 0:
        raise ValueError(f"ridge strengths must be positive, got {list(ridge)}")
    n = gram[:, -1, -1].clamp(min=1)  # positions per lag
    mu, ybar = gram[:, :-1, -1] / n[:, None], cross[:, -1] / n[:, None]  # [K, D], [K, C]
    cov = gram[:, :-1, :-1] - n[:, None, None] * mu[:, :, None] * mu[:, None, :]
    xy = cross[:, :-1] - n[:, None, None] * mu[:, :, None] * ybar[:, None, :]
    scale = (cov.diagonal(dim1=-2, dim2=-1).sum(-1) / cov.shape[-1]).clamp(min=torch.finfo(F64).tiny)
    lam = torch.tensor(list(ridge), dtype=F64, device=gram.device)
    eye = torch.eye(cov.shape[-1], dtype=F64, device=gram.device)
    w = torch.stack([_ridge_solve(cov[i], xy[i], lam * scale[i], eye) for i in range(len(cov))])  # [K, L, D, C]
    bias = ybar[:, None, :] - (mu[:, None, None, :] @ w).squeeze(-2)
    return torch.cat([w, bias[:, :, None, :]], -2)


def _ridge_solve(cov: Tensor, xy: Tensor, lam: Tensor, eye: Tensor) -> Tensor:
    """``[L, D, C]`` solutions of ``(cov + λ·I) W = xy`` for each of the L strengths ``lam``: by
    Cholesky, or, where rounding left ``cov`` ``[D, D]`` slightly indefinite (more features than
    positions), on its eigenvalues clipped at 0 (its nearest positive semi-definite matrix)."""
    factor, info = torch.linalg.cholesky_ex(cov + lam[:, None, None] * eye)
    if not bool(info.any()):
        return torch.cholesky_solve(xy.expand(len(lam), -1, -1), factor)
    values, vectors = torch.linalg.eigh(cov)
    rotated = vectors.T @ xy  # [D, C]
    return torch.stack([vectors @ (rotated / (values.clamp(min=0) + l)[:, None]) for l in lam])


def _nll(scores: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """Summed cross-entropy (nats) ``[K]`` of logits ``[K, N, C]`` at targets/validity ``[K, N]``."""
    nll = torch.logsumexp(scores, -1) - scores.gather(-1, y[..., None]).squeeze(-1)
    return (nll * v).sum(-1)


def vector_scaling(z: Tensor, y: Tensor, v: Tensor, iterations: int = 30) -> tuple[Tensor, Tensor]:
    """Per-class scale and offset of ridge scores: the softmax of ``a ⊙ z + b`` with least cross-entropy.

    Least squares on one-hot targets under-scores rare symbols: their columns are fit mostly to
    zeros, so argmax picks frequent symbols too often and ``softmax(z / T)`` is a poor
    probability. A scale ``a_c`` and offset ``b_c`` per symbol (vector scaling), fitted by
    damped Newton on held-out positions, moves each symbol's decision boundary to where the
    cross-entropy says it belongs; this changes recall, not only cross-entropy. Each lag is its
    own convex problem in ``2C`` parameters (a tiny ridge, 1e-6 per position, keeps it bounded
    when a lag is separable or a symbol is absent), solved one lag at a time so that ``[N, C]``
    stays in cache (faster than all lags batched).

    Args:
        z: ``[K, N, C]`` ridge scores of N held-out positions per lag.
        y, v: ``[K, N]`` targets and validity.
        iterations: at most this many Newton iterations (fewer once no lag's loss falls).

    Returns:
        ``a, b`` ``[K, C]`` each (float64); logits are ``a[:, None] * z + b[:, None]``.
    """
    fits = [_newton_scaling(z[i : i + 1], y[i : i + 1], v[i : i + 1], iterations) for i in range(len(z))]  # cache-sized
    return torch.cat([a for a, _ in fits]), torch.cat([b for _, b in fits])


def _newton_scaling(z: Tensor, y: Tensor, v: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """:func:`vector_scaling` of the K lags of ``z`` ``[K, N, C]`` in one batched damped Newton."""
    k, _, c = z.shape
    z, w = z.float(), v.float()  # float32 sums over N; θ, the loss and the Newton solve in float64
    onehot = F.one_hot(y, c).float()
    n = w.sum(-1).clamp(min=1).double()
    mu = 1e-6 * n[:, None]  # [K, 1]

    def objective(t: Tensor) -> Tensor:  # [K]
        logits = t[:, None, :c].float() * z + t[:, None, c:].float()
        return _nll(logits, y, w).double() + 0.5 * mu.squeeze(-1) * (t**2).sum(-1)

    def start(beta: float) -> Tensor:  # a = β everywhere, b = 0
        return torch.cat([torch.full((k, c), beta, dtype=F64), torch.zeros(k, c, dtype=F64)], -1)

    starts = torch.stack([start(beta) for beta in INITIAL_SCALES])  # [S, K, 2C]
    losses = torch.stack([objective(t) for t in starts])  # [S, K]
    theta, loss = starts[losses.argmin(0), torch.arange(k)], losses.min(0).values
    for _ in range(iterations):
        a, b = theta[:, :c].float(), theta[:, c:].float()
        p = torch.softmax(a[:, None] * z + b[:, None], -1)  # [K, N, C]
        wp = p * w[..., None]
        r, u, wu = wp - onehot * w[..., None], p * z, wp * z
        grad = torch.cat([(r * z).sum(1), r.sum(1)], -1).double() + mu * theta
        # d²/dθ² of Σ_n w_n (logsumexp − target), θ = (a, b): diag(Σ w p x x) − Σ w (p x)(p x)ᵀ per block
        aa = torch.diag_embed((wu * z).sum(1)) - wu.transpose(1, 2) @ u
        ab = torch.diag_embed(wu.sum(1)) - wu.transpose(1, 2) @ p
        bb = torch.diag_embed(wp.sum(1)) - wp.transpose(1, 2) @ p
        hess = torch.cat([torch.cat([aa, ab], -1), torch.cat([ab.transpose(1, 2), bb], -1)], -2).double()
        delta = torch.linalg.solve(hess + torch.diag_embed(mu.expand(-1, 2 * c)), grad[..., None]).squeeze(-1)
        step, before = torch.ones(k, 1, dtype=F64), loss
        for _ in range(BACKTRACKS):  # a quarter of the step where the loss did not fall
            trial = objective(theta - step * delta)
            better = trial <= before
            if better.all():
                break
            step = torch.where(better[:, None], step, step / 4)
        theta = torch.where(better[:, None], theta - step * delta, theta)
        loss = torch.where(better, trial, before)
        if ((before - loss) <= 1e-7 * n).all():  # converged (or stuck) everywhere
            break
    return theta[:, :c], theta[:, c:]


def quick_signature(
    source: StateSource,
    datamodule: Any,
    states: Sequence[str] | None = None,
    lags: Sequence[int] | None = None,
    features: int = 512,
    train_positions: int | None = None,
    ridge: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1, 10),
    max_train_batches: int | None = None,
    max_eval_batches: int | None = None,
    calibrate: bool = True,
    common_positions: bool = False,
    controls: Sequence[str] = (),
    seed: int = 0,
    prior: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
) -> Signature:
    """The quick signature of ``source`` (see module docstring for method and caveats).

    Args:
        states, lags: as :class:`MultiHeadProbe` (default: the ``.c`` states, else all; lags 1…20).
        features: random ReLU features P appended to the standardised state (0: linear ridge).
        train_positions: real positions sampled per training batch for the moments (None: all).
        ridge: relative ridge strengths λ (> 0) tried on dev (scaled by trace/D' of each centred Gram).
        max_train_batches: accumulate the moments over at most this many training batches
            (they settle long before a large corpus ends).
        max_eval_batches: read at most this many dev and test batches (None: all; a
            coarser, faster signature, e.g. to compare hundreds of variants).
        calibrate: fit a per-symbol scale and offset of the ridge scores on held-out dev
            positions (:func:`vector_scaling`); False: the raw ridge scores are the logits
            (faster; lower recall of rare symbols, cross-entropy not meaningful).
        common_positions: score dev/test only where every lag has a target.
        controls: ``random`` and/or ``shuffled``: the same decoders on a randomly initialised
            copy of the model and on the states shuffled across each batch's positions
            (:mod:`memsig.probe.controls`), as ``random:<state>`` / ``shuffled:<state>``.
        seed: draws the features, the sampled positions and the controls.
        prior: ``[C]`` training symbol frequencies (default: counted on ``datamodule.ids("train")``).
        meta: merged into the signature's meta.
    """
    states, lags = resolve_probe(source, states, lags)
    check_lag_reach(datamodule, lags)
    if controls:
        source = ControlledSource(source, controls, seed)
        states = [*states, *(control_spec(c, s) for c in check_controls(controls) for s in states)]
    c, k, ar = len(source.vocab), len(lags), torch.arange(len(lags))
    dims = [sum(source.state_dims[p] for p in state_parts(s)) + features for s in states]
    device = source_device(source)
    need, free = ridge_bytes(dims, lags, c, len(ridge)), free_bytes(device)
    if need > free:
        raise MemoryError(
            f"the ridge preview needs about {need / 2**30:.1f} GiB for its moments ({len(states)} probed "
            f"state{'s' * (len(states) > 1)} of up to {max(dims) + 1} features × {k} lags), more than the "
            f"{free / 2**30:.1f} GiB free on {device}: probe fewer random features (probe.features), fewer states "
            "(probe.states), lags (probe.lags) or controls (probe.controls)"
        )
    moments, phi = train_moments(source, datamodule, states, lags, max_train_batches, features, train_positions, seed)
    weights = {s: ridge_weights(g, xy, ridge) for s, (g, xy) in moments.items()}  # [K, L, D'+1, C]
    correct = {s: torch.zeros(k, len(ridge), dtype=torch.long) for s in states}
    dev_n = torch.zeros(k, dtype=torch.long)
    held: dict[str, list[Tensor]] = {s: [] for s in states}  # dev states kept for the calibration
    held_y, held_v = [], []
    # dev scores every λ at once in float32 (one GEMM [N, D'+1] @ [D'+1, K·L·C]) on a sample of
    # DEV_SAMPLE positions per batch and keeps the states of CALIBRATION_SAMPLE of them
    flat = {s: w.permute(2, 0, 1, 3).reshape(w.shape[2], -1).float() for s, w in weights.items()}
    gen = torch.Generator().manual_seed(seed)
    for sb, y, v in _batches(source, datamodule, "dev", lags, common_positions, max_eval_batches):
        idx = v.any(-1).nonzero().squeeze(1)
        idx = idx[_sample(len(idx), DEV_SAMPLE, gen, idx.device)]
        n_cal = min(len(idx), CALIBRATION_SAMPLE, CALIBRATION_MAX - sum(map(len, held_y))) if calibrate else 0
        held_y.append(y[idx[:n_cal]])  # every rank keeps the whole calibration sample
        held_v.append(v[idx[:n_cal]])
        mine = _share(idx)  # λ is scored on this rank's share of the sample
        y, v = y[mine], v[mine]  # [N, K]
        dev_n += v.sum(0).cpu()
        for s in states:
            x = _state(sb, s)
            held[s].append(x[idx[:n_cal]])
            z = (phi[s](x[mine]) @ flat[s]).view(len(mine), k, len(ridge), c)  # [N, K, L, C]
            correct[s] += ((z.argmax(-1) == y[..., None]) & v[..., None]).sum(0).cpu()
    dev_n = _summed(dev_n)
    correct = {s: _summed(n) for s, n in correct.items()}
    best = {s: correct[s].argmax(1) for s in states}  # λ index per lag
    chosen = {s: weights[s][ar, best[s]].float() for s in states}  # [K, D'+1, C]
    n_held = sum(map(len, held_y))
    scale, offset = {}, {}
    for s in states:  # logits a ⊙ z + b (identity without calibration)
        if n_held:
            z = torch.einsum("nd,kdc->knc", phi[s](torch.cat(held[s])), chosen[s])
            scale[s], offset[s] = vector_scaling(z, torch.cat(held_y).T, torch.cat(held_v).T)
        else:
            scale[s], offset[s] = torch.ones(k, c, dtype=F64), torch.zeros(k, c, dtype=F64)
    confusion = torch.zeros(len(states), k * c * c, dtype=torch.long)
    ce = torch.zeros(len(states), k, dtype=F64)
    forward = torch.zeros(c * c, dtype=torch.long)
    for sb, y, v in _batches(source, datamodule, "test", lags, common_positions, max_eval_batches):
        idx = _share(v.any(-1).nonzero().squeeze(1))
        y, v = y[idx].T, v[idx].T
        for i, s in enumerate(states):
            z = torch.einsum("nd,kdc->knc", phi[s](_state(sb, s)[idx]), chosen[s]).double()
            z = scale[s].to(z.device)[:, None] * z + offset[s].to(z.device)[:, None]
            ce[i] += _nll(z, y, v).cpu()
            confusion[i] += confusion_counts(z.argmax(-1).T, y.T, v.T, c).cpu()
        if sb.next_logits is not None:  # every rank reads every batch: no sum over ranks
            forward += next_symbol_counts(sb)
    ce, confusion = _summed(ce), _summed(confusion)
    if prior is None:
        prior = label_prior(datamodule.ids("train"), c, "symbol")
    conf = confusion.view(len(states), k, c, c).numpy()
    n_test = conf.sum((-1, -2))
    ce_bits = np.where(n_test > 0, ce.numpy() / np.maximum(n_test, 1) / math.log(2), np.nan)  # NaN: no test position
    info = {
        "probe": {
            "kind": "ridge",
            "states": states,
            "lags": lags,
            "features": features,
            "train_positions": train_positions,
            "ridge_grid": list(ridge),
            "ridge": {s: [float(ridge[j]) for j in best[s]] for s in states},
            "calibrated": calibrate,
            "calibration_positions": n_held,
            "dev_accuracy": {s: (correct[s][ar, best[s]] / dev_n.clamp(min=1)).tolist() for s in states},
            "common_positions": common_positions,
            "controls": list(controls),
            "max_train_batches": max_train_batches,
            "max_eval_batches": max_eval_batches,
            "seed": seed,
        },
        **(meta or {}),
    }
    return Signature(
        states,
        lags,
        list(source.vocab.labels),
        conf,
        ce_bits,
        np.asarray(prior, dtype=np.float64),
        forward.view(c, c).numpy() if forward.sum() else None,
        info,
    )
