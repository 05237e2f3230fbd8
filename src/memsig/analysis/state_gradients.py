"""State gradients (reference §2): how strongly the state at t still depends on the input at t−δ.

For a :class:`~memsig.states.GradientSource` (a model whose states are differentiable in its
input embeddings) and a state s, the Jacobian ``J_{t,δ} = ∂s_t / ∂e_{t−δ}`` ``[D, E]`` of the
state at t with respect to the input embedding at t−δ, for δ = 1…Δ.

**How it is computed.** N positions t are sampled from a symbol stream. Each becomes one row:
``warmup`` symbols of context (run without gradient, so the state at the window's start is the
state in context), then the Δ+1 embeddings ``e_{t−Δ} … e_t`` (with gradient). Rows do not
interact, so one backward pass with cotangent ``e_d`` (unit vector of state unit d) on every
row's last state gives row d of ``J_{t,δ}`` for every row and every lag at once. The D cotangents
are batched too: the rows are replicated ``chunk`` times and replica j gets unit ``d_j``, so a
whole Jacobian set costs ``D / chunk`` forward+backward passes of ``chunk·N`` rows of length Δ+1
(not D·N passes of one position; ``benchmarks/state_gradients_speed.py`` measures the gain).
The result is exact (no truncation beyond what ``warmup`` does to the context).
A source whose network is a plain CharRNN (the CharLM: LSTM and GRU cells) is run in **forward
mode** instead (:mod:`memsig.analysis.tangents`): E unit tangents on each window's first input
``e_p`` propagate through the cell equations and give ``∂s_{p+δ}/∂e_p`` for every lag, layer and
state at once — O(E) work per step where reverse mode needs O(D) per state (PyTorch's
forward-mode AD does not cover the fused oneDNN LSTM, hence the hand-written tangents). Both
modes are exact; they hold the other end of
the (input, state) pair fixed, and the per-symbol maps are keyed by the input's symbol either way.

**Whitening.** Embedding spaces are anisotropic, so the Jacobian is analysed in whitened
coordinates: with μ, Σ the mean and covariance of the input embeddings over the analysed
positions' symbols (frequency-weighted), Σ = Q Λ Qᵀ and ``Wh = Q_r Λ_r^{1/2}`` over the r
eigenvalues above ``1e-6 · λ_max`` (with |V| ≈ 31 symbols Σ has rank ≤ 30, so a Cholesky factor
does not exist once E ≥ 31: the null space is dropped instead). A whitened embedding
``e' = Λ_r^{-1/2} Q_rᵀ (e − μ)`` has identity covariance and ``∂s/∂e' = J · Wh`` ``[D, r]``.

**Outputs** (:class:`GradientMemory`, ``gradients.npz``):

- ``singular_values`` ``[S, K, R]``: SVD of the position-averaged whitened Jacobian per lag
  (directions of the input the state keeps on average; their decay over δ is a memory curve);
- ``norm`` ``[S, K]``: mean Frobenius norm of the whitened Jacobian over positions;
- ``symbol_norm`` ``[S, K, C]``: the same per symbol at t−δ (the probe signature's layout; NaN
  below ``min_support`` positions), with ``support``;
- ``meta``: settings, whitening rank, provenance, and (:func:`correlate`) the rank correlation
  of gradient memory with probe recall, per lag across symbols and across lags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from memsig.analysis.correlation import spearman
from memsig.analysis.tangents import input_jacobians, tangent_net
from memsig.probe.signature import Signature, read_labelled, write_labelled
from memsig.states import GradientSource

SCHEMA = "memsig.gradients/1"


# --------------------------------------------------------------------------- whitening
@dataclass
class Whitening:
    """``e' = (e − mean) @ inverse`` has identity covariance; ``J @ factor`` is ∂s/∂e'.

    Attributes:
        mean: ``[E]``.
        factor: ``[E, r]`` ``Q_r Λ_r^{1/2}``.
        inverse: ``[E, r]`` ``Q_r Λ_r^{-1/2}``.
    """

    mean: Tensor
    factor: Tensor
    inverse: Tensor

    @property
    def rank(self) -> int:
        return self.factor.shape[1]


def whitening(embeddings: Tensor, weights: Tensor, rel_tol: float = 1e-6) -> Whitening:
    """The whitening of ``embeddings`` ``[V, E]`` weighted by symbol frequencies ``weights`` ``[V]``,
    in the eigenbasis of their covariance's non-null space (float64)."""
    e = embeddings.detach().double()
    p = weights.double() / weights.sum()
    mean = p @ e
    centred = e - mean
    cov = centred.T @ (centred * p[:, None])
    lam, q = torch.linalg.eigh(cov)
    keep = lam > rel_tol * lam.max().clamp(min=1e-300)
    if not bool(keep.any()):
        raise ValueError("the input embeddings do not vary over the analysed symbols: nothing to whiten")
    lam, q = lam[keep], q[:, keep]
    return Whitening(mean, q * lam.sqrt(), q / lam.sqrt())


# ---------------------------------------------------------------------------- jacobians
def sample_positions(n_symbols: int, n: int, lags: int, warmup: int, seed: int) -> Tensor:
    """``[n]`` sorted distinct positions t with ``warmup + lags`` symbols before them."""
    first = warmup + lags
    if n_symbols <= first:
        raise ValueError(f"a stream of {n_symbols} symbols is too short for {lags} lags and a warm-up of {warmup}")
    n = min(n, n_symbols - first)
    gen = torch.Generator().manual_seed(seed)
    return (torch.randperm(n_symbols - first, generator=gen)[:n] + first).sort().values


def jacobians(
    source: GradientSource,
    ids: Tensor,
    positions: Tensor,
    lags: int,
    warmup: int,
    states: list[str],
    chunk: int = 32,
    mode: str = "auto",
) -> tuple[dict[str, Tensor], Tensor]:
    """Exact Jacobians of states w.r.t. input embeddings at lags 0…Δ, one window per position.

    Row n is the window ``t−Δ … t`` (``t = positions[n]``) after ``warmup`` context symbols.
    ``reverse`` mode gives ``∂s_t / ∂e_{t−δ}`` (the state at the window's end, each input of it);
    ``forward`` mode (sources with a :func:`~memsig.analysis.tangents.tangent_net`, e.g. the CharLM)
    gives ``∂s_{p+δ} / ∂e_p`` with ``p = t−Δ`` (the window's first input, each state after it) —
    the same (input, lag) pairs up to which end is held fixed, all states at once. ``auto`` picks
    forward where available.

    Args:
        source: the model (eval mode, as the caller set it).
        ids: ``[N_symbols]`` the symbol stream (any integer dtype).
        positions: ``[N]`` positions t, each with ``warmup + lags`` symbols before it.
        lags: Δ.
        warmup: context symbols run (without gradient) before each window.
        states: state names.
        chunk: reverse mode: state units whose cotangents share one backward pass (rows replicated).
        mode: ``auto``, ``forward`` or ``reverse``.
    Returns:
        name → ``[N, Δ+1, D, E]`` float32 (entry ``[n, δ]``: lag δ), and the ``[N, Δ+1]`` symbol ids
        of the inputs the entries differentiate by.
    """
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"gradients mode must be auto, forward or reverse; got {mode!r}")
    net = tangent_net(source)
    if mode == "forward" and net is None:
        raise TypeError(f"{type(source).__name__} has no forward mode (its network is no CharRNN); use mode=reverse")
    offsets = torch.arange(-(warmup + lags), 1)
    rows = ids.long()[positions[:, None] + offsets]  # [N, warmup + Δ + 1]
    context, window = rows[:, :warmup], rows[:, warmup:]
    if net is not None and mode != "reverse":
        jac = input_jacobians(net, window, context)
        return {name: jac[name] for name in states}, window[:, :1].expand(-1, lags + 1)
    with torch.no_grad():
        emb = source.embed(window)  # [N, Δ+1, E]
    n, w, e = emb.shape
    out: dict[str, Tensor] = {}
    for name in states:
        dim = source.state_dims[name]
        jac = torch.empty(n, dim, w, e)
        for d0 in range(0, dim, chunk):
            units = torch.arange(d0, min(d0 + chunk, dim))
            m = len(units)
            x = emb.repeat(m, 1, 1).requires_grad_(True)  # [m·N, Δ+1, E], replica j = unit units[j]
            s = source.embedded_states(x, context, repeat=m)[name][:, -1].view(m, n, dim)
            picked = s.gather(2, units.view(m, 1, 1).expand(m, n, 1))  # [m, N, 1]
            (grad,) = torch.autograd.grad(picked.sum(), x)
            jac[:, units] = grad.view(m, n, w, e).transpose(0, 1)
        out[name] = jac.flip(2).transpose(1, 2)  # [N, Δ+1, D, E], lag 0 first
    return out, window.flip(1)


# ------------------------------------------------------------------------------ result
@dataclass
class GradientMemory:
    """State-gradient memory of some states (see module docstring).

    Attributes:
        states: S state names.
        lags: K lags (1…Δ).
        symbols: C symbol labels.
        singular_values: ``[S, K, R]`` of the position-averaged whitened Jacobian, descending
            (NaN-padded where a state has fewer than R).
        norm: ``[S, K]`` mean Frobenius norm of the whitened Jacobian.
        norm_sum: ``[S, K, C]`` sums of that norm per symbol at t−δ (with ``support``: the means).
        support: ``[S, K, C]`` positions per symbol at t−δ.
        meta: settings and provenance (JSON-serialisable).
        min_support: per-symbol cells with fewer positions are NaN.
    """

    states: list[str]
    lags: list[int]
    symbols: list[str]
    singular_values: np.ndarray
    norm: np.ndarray
    norm_sum: np.ndarray
    support: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    min_support: int = 5

    @property
    def symbol_norm(self) -> np.ndarray:
        """``[S, K, C]`` mean whitened Jacobian norm per symbol at t−δ (NaN below ``min_support``)."""
        return np.where(self.support >= self.min_support, self.norm_sum / np.maximum(self.support, 1), np.nan)

    def decay(self, k: int = 5) -> np.ndarray:
        """``[S, K]`` the sum of the top-``k`` singular values per lag: a memory-decay curve."""
        return np.nansum(self.singular_values[..., :k], -1)

    def index(self, state: str) -> int:
        try:
            return self.states.index(state)
        except ValueError:
            raise KeyError(f"state {state!r} has no state gradients; computed for {self.states}") from None

    def save(self, path: str | Path) -> Path:
        """Write as one ``.npz`` (atomic), axes and meta as JSON like a signature file."""
        axes = {"state": self.states, "lag": self.lags, "symbol": self.symbols}
        arrays = {
            "singular_values": self.singular_values,
            "norm": self.norm,
            "norm_sum": self.norm_sum,
            "support": self.support.astype(np.int64),
        }
        return write_labelled(path, SCHEMA, axes, self.min_support, self.meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> GradientMemory:
        head, z = read_labelled(path, SCHEMA, "state-gradient", "probe.py gradients=default writes it")
        axes = head["axes"]
        return cls(
            list(axes["state"]),
            [int(x) for x in axes["lag"]],
            list(axes["symbol"]),
            z["singular_values"],
            z["norm"],
            z["norm_sum"],
            z["support"],
            head["meta"],
            int(head["min_support"]),
        )


def state_gradients(
    source: GradientSource,
    ids: Tensor,
    lags: int = 20,
    positions: int = 256,
    batch: int = 64,
    warmup: int = 32,
    chunk: int = 32,
    states: list[str] | None = None,
    seed: int = 0,
    mode: str = "auto",
    progress: bool = False,
) -> GradientMemory:
    """The :class:`GradientMemory` of ``source`` on the symbol stream ``ids`` ``[N_symbols]``.

    Args:
        lags: Δ (lags 1…Δ are reported).
        positions: sampled positions t.
        batch: positions per Jacobian computation (memory ∝ ``batch · chunk · (Δ+1)``).
        warmup: context symbols before each window (run without gradient).
        chunk: state units per backward pass (see :func:`jacobians`).
        mode: ``auto``, ``forward`` or ``reverse`` (see :func:`jacobians`).
        states: state names (default: all of ``source.state_names``).
        progress: show a progress bar.
    """
    names = list(states or source.state_names)
    unknown = [s for s in names if s not in source.state_names]
    if unknown:
        raise KeyError(f"states {unknown} are not states of the model; it has {source.state_names}")
    ids = ids.long()
    pos = sample_positions(len(ids), positions, lags, warmup, seed)
    if isinstance(source, torch.nn.Module):
        source.eval()  # no dropout: the Jacobian of the model as it is used
    vocab_size = len(source.vocab)
    with torch.no_grad():
        table = source.embed(torch.arange(vocab_size)[None])[0]  # [V, E]
    counts = torch.bincount(ids[pos[:, None] - torch.arange(1, lags + 1)].flatten(), minlength=vocab_size)
    white = whitening(table, counts.float())
    factor = white.factor.float()
    s, k, c = len(names), lags, vocab_size
    mean_jac = {name: torch.zeros(k, source.state_dims[name], white.rank, dtype=torch.float64) for name in names}
    norm_sum = np.zeros((s, k, c))
    support = np.zeros((s, k, c), dtype=np.int64)
    steps = [pos[i : i + batch] for i in range(0, len(pos), batch)]
    for part in tqdm(steps, desc="state gradients", disable=not progress):
        jac, inputs = jacobians(source, ids, part, lags, warmup, names, chunk, mode)
        prev = inputs[:, 1:]  # [n, K] the input symbol of each lag
        for i, name in enumerate(names):
            wj = jac[name][:, 1:] @ factor  # [n, K, D, r]
            mean_jac[name] += wj.double().sum(0)
            fro = wj.flatten(2).norm(dim=-1).double()  # [n, K]
            for j in range(k):
                norm_sum[i, j] += torch.bincount(prev[:, j], fro[:, j], minlength=c).numpy()
                support[i, j] += torch.bincount(prev[:, j], minlength=c).numpy()
    n = len(pos)
    spectra = [torch.linalg.svdvals(mean_jac[name] / n).numpy() for name in names]  # [K, min(D, r)] each
    svals = np.full((s, k, max(x.shape[1] for x in spectra)), np.nan)
    for i, x in enumerate(spectra):
        svals[i, :, : x.shape[1]] = x
    norm = norm_sum.sum(-1) / n
    forward = mode != "reverse" and tangent_net(source) is not None
    meta = {
        "positions": n,
        "mode": "forward" if forward else "reverse",
        "warmup": warmup,
        "whitening_rank": white.rank,
        "embedding_dim": int(table.shape[1]),
        "seed": seed,
    }
    return GradientMemory(
        names, list(range(1, lags + 1)), list(source.vocab.labels), svals, norm, norm_sum, support, meta
    )


def correlate(grad: GradientMemory, sig: Signature) -> dict[str, dict[str, Any]]:
    """Spearman's ρ between gradient memory and probe recall for the states and lags both have.

    Per state: ``per_lag`` {lag: ρ across symbols of ``symbol_norm`` vs per-symbol recall (cells
    supported in both)} and ``across_lags``: ρ of the mean gradient norm vs marginal recall over lags.
    """
    out: dict[str, dict[str, Any]] = {}
    lags = [lag for lag in grad.lags if lag in sig.lags]
    shared = [sym for sym in grad.symbols if sym in sig.symbols]
    gc, sc = [grad.symbols.index(x) for x in shared], [sig.symbols.index(x) for x in shared]
    for state in grad.states:
        if state not in sig.states or len(lags) < 1:
            continue
        gi, si = grad.index(state), sig.index(state)
        per_lag: dict[str, float] = {}
        for lag in lags:
            a = grad.symbol_norm[gi, grad.lags.index(lag), gc]
            b = sig.recall[si, sig.lags.index(lag), sc]
            ok = np.isfinite(a) & np.isfinite(b)
            per_lag[str(lag)] = spearman(a[ok], b[ok])
        across = spearman(
            grad.norm[gi, [grad.lags.index(x) for x in lags]], sig.accuracy[si, [sig.lags.index(x) for x in lags]]
        )
        finite = [v for v in per_lag.values() if math.isfinite(v)]
        out[state] = {
            "per_lag": per_lag,
            "across_lags": across,
            "mean_per_lag": float(np.mean(finite)) if finite else float("nan"),
        }
    return out
