"""Quick memory signature: closed-form linear (ridge) decoders from second moments.

A preview of the signature in seconds instead of the MLP probe's training run
(:class:`~memsig.probe.multihead.MultiHeadProbe`). Three streaming passes, each reading
the split's batches in order (so the source carries its state exactly as in training):

1. **train** — per probed state, float64 moments of ``x̃ = [x, 1]``: one shared Gram
   ``G = Σ x̃x̃ᵀ`` over real positions, the cross moments ``X̃ᵀY_δ`` (one-hot targets) of
   every lag, and small corrections ``E_j`` = Gram of the real positions with
   ``history == j`` (j < max lag: only the first positions of each stream/segment) and,
   for negative lags, ``E⁻_j`` over those with j real positions after them in the window.
   ``G_δ = G − Σ_{j<δ} E_j`` (``G − Σ_{j<|δ|} E⁻_j`` for δ < 0) is then exactly the Gram
   of lag δ's positions; each batch checks that these are the positions
   :func:`~memsig.probe.targets.lag_targets` marks valid (padding only at row ends).
2. **solve** — ``W_δ(λ) = (G_δ + λ'·I')⁻¹ X̃ᵀY_δ`` with an unpenalised bias, done as ridge
   on centred features (one ``eigh`` per (state, lag), reused for every λ). λ is
   scale-free: ``λ' = λ · trace(S_δ) / D``, S_δ the centred Gram (the penalised block).
3. **dev** — every λ is scored at once (one float32 GEMM for all lags and λ); λ is
   chosen per (state, lag) by dev accuracy (argmax of ``x̃W``) over every dev position.
   Ridge scores are not probabilities, so cross-entropy uses ``softmax(x̃W / T)``; the dev
   cross-entropy of every (λ, T), T in ``2^-10 … 2^0``, is accumulated in the same pass on
   a sample of at most 1024 positions per batch (a 1-D fit needs no more) and T is the
   best one for the chosen λ.
   **test** — confusion matrices and cross-entropy with the chosen λ and T, plus the
   model's own next-symbol confusion when the source gives ``next_logits``.

Memory holds only the moments (``[K, D+1, D+1]`` per state); nothing grows with the
corpus. The ``random``/``shuffled`` controls are not offered: use the MLP probe.

When to trust it: linear decoders *underestimate* recall that the state holds
non-linearly (an MLP decoder can only do better), so absolute accuracies are lower
bounds. It is fine for ranking symbols and lags, for spotting where memory fades, and as
a preview; compare with the MLP signature on a few lags before drawing conclusions.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.probe.signature import Signature
from memsig.probe.targets import LeftContext, lag_targets, resolve_probe
from memsig.states import StateBatch, StateSource

F64 = torch.float64
INV_TEMPERATURES = tuple(2.0**i for i in range(11))  # β = 1/T tried on dev
TEMPERATURE_SAMPLE = 1024  # dev positions per batch the temperature is fitted on


def _batches(source: StateSource, datamodule: Any, split: str, lags: list[int], common: bool,
             max_batches: int | None) -> Iterator[tuple[StateBatch, Tensor, Tensor]]:
    """The first ``max_batches`` batches of a split in order: states, targets and validity ``[B·T, K]``."""
    device = torch.device("cpu")
    if isinstance(source, nn.Module):
        source.eval()
        device = next(source.parameters(), torch.empty(0)).device
    data = datamodule.dataset(split)
    context = LeftContext(max(0, max(lags)))
    for i in range(len(data) if max_batches is None else min(len(data), max_batches)):
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in data[i].items()}
        sb = source.states(batch)
        ext = context.extend(split, sb.symbols, bool(batch["carry"]))
        targets, valid = lag_targets(ext, sb.history, sb.mask, lags, common)
        yield sb, targets.flatten(0, 1), valid.flatten(0, 1)


def _features(sb: StateBatch, spec: str) -> Tensor:
    """``[B·T, D+1]`` float64 state (parts of ``a+b`` concatenated) with a bias column."""
    x = torch.cat([sb.states[p] for p in spec.split("+")], -1).flatten(0, 1).to(F64)
    return torch.cat([x, x.new_ones(len(x), 1)], -1)


def train_moments(source: StateSource, datamodule: Any, states: Sequence[str] | None = None,
                  lags: Sequence[int] | None = None,
                  max_batches: int | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """One pass over train: per state, the Gram ``[K, D+1, D+1]`` and cross moment ``[K, D+1, C]`` of each lag.

    The per-lag Grams come from the shared Gram minus the corrections (module docstring).
    Raises ValueError if a batch pads inside a row (the corrections assume trailing padding).
    """
    states, lags = resolve_probe(source, states, lags)
    c, k = len(source.vocab), len(lags)
    up, down = max(0, max(lags)), max(0, -min(lags))
    j = torch.arange(up + down)  # corrections: history == j (j < up), then up + j: j real positions after t
    excluded = torch.stack([j < lag if lag > 0 else (j >= up) & (j < up - lag) for lag in lags]).to(F64)  # [K, J]
    gram: dict[str, Tensor] = {}
    corr: dict[str, Tensor] = {}
    cross: dict[str, Tensor] = {}
    for sb, y, v in _batches(source, datamodule, "train", lags, False, max_batches):
        m, hist = sb.mask.flatten(), sb.history.flatten()
        after = (sb.mask.flip(1).cumsum(1).flip(1) - sb.mask.long()).flatten()  # real positions after t
        if not torch.equal(v, torch.stack([m & (hist >= l if l > 0 else after >= -l) for l in lags], -1)):
            raise ValueError("quick_signature needs padding only at the end of each row")
        levels = [hist == j for j in range(up)] + [after == j for j in range(down)]
        groups = [(j, idx) for j, sel in enumerate(levels) if len(idx := (m & sel).nonzero().squeeze(1))]
        onehot = (F.one_hot(y, c).to(F64) * v[..., None]).flatten(1)  # [N, K·C]
        for s in states:
            x = _features(sb, s)
            d = x.shape[1]
            if s not in gram:
                gram[s], corr[s], cross[s] = x.new_zeros(d, d), x.new_zeros(up + down, d, d), x.new_zeros(d, k * c)
            xm = x[m]
            gram[s] += xm.T @ xm
            cross[s] += x.T @ onehot
            for j, idx in groups:
                corr[s][j] += x[idx].T @ x[idx]
    return {s: (gram[s] - torch.einsum("kj,jde->kde", excluded.to(gram[s].device), corr[s]),
                cross[s].view(-1, k, c).transpose(0, 1)) for s in states}


def ridge_weights(gram: Tensor, cross: Tensor, ridge: Sequence[float]) -> Tensor:
    """``[K, L, D+1, C]`` ridge solutions for every lag and λ (bias row last, unpenalised).

    Args:
        gram: ``[K, D+1, D+1]`` per-lag Gram of ``[x, 1]``; cross: ``[K, D+1, C]``.
        ridge: L relative strengths; λ' = λ · trace(centred Gram) / D.
    """
    n = gram[:, -1, -1].clamp(min=1)  # positions per lag
    mu, ybar = gram[:, :-1, -1] / n[:, None], cross[:, -1] / n[:, None]  # [K, D], [K, C]
    cov = gram[:, :-1, :-1] - n[:, None, None] * mu[:, :, None] * mu[:, None, :]
    xy = cross[:, :-1] - n[:, None, None] * mu[:, :, None] * ybar[:, None, :]
    evals, q = torch.linalg.eigh(cov)
    scale = (cov.diagonal(dim1=-2, dim2=-1).sum(-1) / cov.shape[-1]).clamp(min=torch.finfo(F64).tiny)
    lam = torch.tensor(list(ridge), dtype=F64, device=gram.device)
    denom = evals.clamp(min=0)[:, None, :] + lam[None, :, None] * scale[:, None, None]  # [K, L, D]
    w = q[:, None] @ ((q.transpose(-1, -2) @ xy)[:, None] / denom[..., None])  # [K, L, D, C]
    bias = ybar[:, None, :] - (mu[:, None, None, :] @ w).squeeze(-2)
    return torch.cat([w, bias[:, :, None, :]], -2)


def _nll(scores: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """Summed cross-entropy (nats) ``[K]`` of logits ``[K, N, C]`` at targets/validity ``[K, N]``."""
    nll = torch.logsumexp(scores, -1) - scores.gather(-1, y[..., None]).squeeze(-1)
    return (nll * v).sum(-1)


def quick_signature(source: StateSource, datamodule: Any, states: Sequence[str] | None = None,
                    lags: Sequence[int] | None = None, ridge: Sequence[float] = (1e-3, 1e-2, 1e-1, 1, 10, 100),
                    max_train_batches: int | None = None, common_positions: bool = False, prior: np.ndarray | None = None,
                    meta: dict[str, Any] | None = None) -> Signature:
    """The ridge signature of ``source`` (see module docstring for method and caveats).

    Args:
        states, lags: as :class:`MultiHeadProbe` (default: the ``.c`` states, else all; lags 1…20).
        ridge: relative ridge strengths λ tried on dev (scaled by trace/D of each centred Gram).
        max_train_batches: accumulate the moments over at most this many training batches
            (they settle long before a large corpus ends); dev and test are read whole.
        common_positions: score dev/test only where every lag has a target.
        prior: ``[C]`` training symbol frequencies (default: counted on ``datamodule.ids("train")``).
        meta: merged into the signature's meta.
    """
    states, lags = resolve_probe(source, states, lags)
    c, k, ar = len(source.vocab), len(lags), torch.arange(len(lags))
    moments = train_moments(source, datamodule, states, lags, max_train_batches)
    weights = {s: ridge_weights(g, xy, ridge) for s, (g, xy) in moments.items()}  # [K, L, D+1, C]
    correct = {s: torch.zeros(len(ridge), k, dtype=torch.long) for s in states}
    dev_ce = {s: torch.zeros(len(ridge), len(INV_TEMPERATURES), k, dtype=F64) for s in states}
    dev_n = torch.zeros(k, dtype=torch.long)
    # dev scores every λ at once in float32 (one GEMM [N, D+1] @ [D+1, K·L·C]); the
    # temperature, a 1-D fit, only needs a sample: at most TEMPERATURE_SAMPLE positions a batch
    flat = {s: w.permute(2, 0, 1, 3).reshape(w.shape[2], -1).float() for s, w in weights.items()}
    gen = torch.Generator().manual_seed(0)
    for sb, y, v in _batches(source, datamodule, "dev", lags, common_positions, None):
        idx = v.any(-1).nonzero().squeeze(1)
        y, v = y[idx].T, v[idx].T  # [K, N]
        dev_n += v.sum(-1).cpu()
        sample = torch.randperm(len(idx), generator=gen)[:TEMPERATURE_SAMPLE].to(y.device)
        for s in states:
            z = (_features(sb, s)[idx].float() @ flat[s]).view(len(idx), k, len(ridge), c)  # [N, K, L, C]
            correct[s] += ((z.argmax(-1) == y.T[:, :, None]) & v.T[:, :, None]).sum(0).T.cpu()
            zs = z[sample].permute(2, 1, 0, 3).double()  # [L, K, n, C]
            ys, vs = y[:, sample], v[:, sample]
            dev_ce[s] += torch.stack([torch.stack([_nll(zl * b, ys, vs) for b in INV_TEMPERATURES]) for zl in zs]).cpu()
    best = {s: correct[s].argmax(0) for s in states}  # λ index per lag
    beta = {s: torch.tensor(INV_TEMPERATURES, dtype=F64)[dev_ce[s].permute(2, 0, 1)[ar, best[s]].argmin(-1)]
            for s in states}
    chosen = {s: weights[s][ar, best[s]] for s in states}  # [K, D+1, C]
    confusion = torch.zeros(len(states), k * c * c, dtype=torch.long)
    ce = torch.zeros(len(states), k, dtype=F64)
    forward = torch.zeros(c * c, dtype=torch.long)
    for sb, y, v in _batches(source, datamodule, "test", lags, common_positions, None):
        idx = v.any(-1).nonzero().squeeze(1)
        y, v = y[idx].T, v[idx].T
        for i, s in enumerate(states):
            z = torch.einsum("nd,kdc->knc", _features(sb, s)[idx], chosen[s])
            ce[i] += _nll(z * beta[s].to(z.device)[:, None, None], y, v).cpu()
            cell = (ar.to(y.device)[:, None] * c + y) * c + z.argmax(-1)
            confusion[i] += torch.bincount(cell[v], minlength=k * c * c).cpu()
        if sb.next_logits is not None:
            ok = sb.mask[:, 1:] & sb.mask[:, :-1]
            pred = sb.next_logits[:, :-1].argmax(-1)[ok]
            forward += torch.bincount(sb.symbols[:, 1:][ok] * c + pred, minlength=c * c).cpu()
    if prior is None:
        prior = torch.bincount(datamodule.ids("train").long(), minlength=c).double().numpy()
        prior = prior / prior.sum()
    conf = confusion.view(len(states), k, c, c).numpy()
    ce_bits = ce.numpy() / np.maximum(conf.sum((-1, -2)), 1) / math.log(2)
    info = {"probe": {"mode": "quick", "states": states, "lags": lags, "ridge_grid": list(ridge),
                      "ridge": {s: [float(ridge[j]) for j in best[s]] for s in states},
                      "temperature": {s: (1 / beta[s]).tolist() for s in states},
                      "dev_accuracy": {s: (correct[s][best[s], ar] / dev_n.clamp(min=1)).tolist() for s in states},
                      "common_positions": common_positions, "max_train_batches": max_train_batches},
            **(meta or {})}
    return Signature(states, lags, list(source.vocab.labels), conf, ce_bits, np.asarray(prior, dtype=np.float64),
                     forward.view(c, c).numpy() if forward.sum() else None, info)
