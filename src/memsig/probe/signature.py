"""The memory signature: what the probes recalled, per state, lag and symbol.

Everything derives from the test confusion matrices (rows: true symbol, columns:
predicted) of each decoder (state, lag), plus the decoders' cross-entropy, the training
prior and the model's own next-symbol confusion. A probe trained with several seeds pools
them: the confusion counts are summed over the seeds (recall = the mean over seeds), and
per-block, per-seed counts of correct answers give every cell and marginal an interval of
both sources of uncertainty (:meth:`Signature.recall_ci`): test sampling by a bootstrap over
blocks of the test stream, and probe training by the spread over seeds. Saved as one ``.npz`` file whose
``meta`` entry (JSON) names the axes — ``state`` (probed states, controls prefixed
``random:`` / ``shuffled:``), ``lag`` (see :mod:`memsig.probe.targets`), ``symbol`` —
and holds the provenance (model config, checkpoint hash, split, probe config, seed).
It loads back exactly (:meth:`Signature.load`).

Memory beyond inference: a signature may also hold the backward-context baseline scored on the
same positions (state ``backward``: what the symbols after the target alone imply) and, per
state, a decoder that reads the state on top of it (``given:<state>``). Per-block cross-entropy
sums then give :meth:`Signature.conditional_bits`, the information the state holds about
``x_{t-δ}`` beyond what the later symbols imply, with the same two-source intervals.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from memsig.data.io import atomic_write_bytes

SCHEMA = "memsig.signature/2"
SCHEMAS = ("memsig.signature/1", SCHEMA)  # /1: one seed, no blocks (read as such)
CONTROL_PREFIXES = ("random:", "shuffled:")
GIVEN = "given:"  # a decoder of the state on top of the backward-context baseline
BACKWARD = "backward"  # the backward-context baseline (memsig.probe.backward)
WRITER = "a signature is the signature.npz that `python probe.py ckpt=<checkpoint>` writes into its run dir"


class SignatureError(ValueError):
    """A file that is not the memsig file (a signature, state gradients) it was read as: the message
    names the file, what it lacks and what writes one."""


def wilson(successes: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion (elementwise; NaN where ``n == 0``)."""
    n_ = np.where(n > 0, n, np.nan).astype(float)
    p = successes / n_
    denom = 1 + z**2 / n_
    centre = (p + z**2 / (2 * n_)) / denom
    half = z * np.sqrt(p * (1 - p) / n_ + z**2 / (4 * n_**2)) / denom
    return centre - half, centre + half


def block_bootstrap_variance(
    block_correct: np.ndarray, block_support: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Variances of recall per cell and of the marginal over the last axis, from both sources.

    Args:
        block_correct: ``[R, B, ..., C]`` correct answers of each of R seeds in each of B blocks.
        block_support: ``[B, ..., C]`` positions per block and cell.
        n_boot: bootstrap resamples of the blocks (with replacement, B per resample; the same
            resamples for every seed and cell, so cells and seeds keep their dependence).

    Returns:
        ``(cells [..., C], marginal [...])``: the bootstrap variance of the seed-mean recall plus
        the variance between seeds (ddof 1; 0 for one seed). NaN where a cell has no support.
    """
    r, b = block_correct.shape[:2]
    weights = block_weights(b, n_boot, seed)
    flat_c = block_correct.reshape(r, b, -1).astype(np.float64)
    flat_s = block_support.reshape(b, -1).astype(np.float64)
    sup = weights @ flat_s  # [n_boot, cells]
    cor = np.einsum("nb,rbx->nrx", weights, flat_c)  # [n_boot, R, cells]
    shape = block_support.shape[1:]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cells without support: NaN, as documented
        cells = np.nanvar((cor / sup[:, None]).mean(1), axis=0)
        marginal = np.nanvar(
            (cor.reshape(n_boot, r, *shape).sum(-1) / sup.reshape(n_boot, *shape).sum(-1)[:, None]).mean(1), axis=0
        )
        point = flat_c.sum(1) / flat_s.sum(0)  # [R, cells]
        point_marginal = block_correct.sum((1, -1)) / block_support.sum((0, -1))  # [R, ...]
        if r > 1:
            cells = cells + np.var(point, axis=0, ddof=1)
            marginal = marginal + np.var(point_marginal, axis=0, ddof=1)
    return cells.reshape(shape), marginal


def block_weights(b: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, b]`` how often each of ``b`` blocks is drawn in each bootstrap resample."""
    return np.random.default_rng(seed).multinomial(b, np.full(b, 1 / b), size=n_boot).astype(np.float64)


@dataclass
class Signature:
    """Recall of the probed states (see module docstring).

    Attributes:
        states: S probed state names (controls included).
        lags: K lags.
        symbols: C target labels (as shown in plots).
        confusion: ``[S, K, C, C]`` int64 test counts, rows true, columns predicted.
        ce_bits: ``[S, K]`` mean test cross-entropy of each decoder, bits (NaN: no test position).
        prior: ``[C]`` target frequencies on the training split.
        forward_confusion: ``[C, C]`` the model's own next-symbol confusion on test (or None).
        meta: provenance and settings (JSON-serialisable).
        min_support: cells with fewer test positions than this are NaN, not 0.
        seeds: R probe seeds pooled in ``confusion`` (each scored on the same positions).
        block_correct: ``[R, B, S, K, C]`` correct answers per seed and test block, or None.
        block_support: ``[B, S, K, C]`` test positions per block (each seed's), or None.
        block_nll: ``[R, B, S, K, C]`` summed test cross-entropy (nats) per seed, block and true
            symbol, or None (older files, streamed probes).
    """

    states: list[str]
    lags: list[int]
    symbols: list[str]
    confusion: np.ndarray
    ce_bits: np.ndarray
    prior: np.ndarray
    forward_confusion: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    min_support: int = 20
    seeds: int = 1
    block_correct: np.ndarray | None = None
    block_support: np.ndarray | None = None
    block_nll: np.ndarray | None = None

    def __post_init__(self) -> None:
        s, k, c = len(self.states), len(self.lags), len(self.symbols)
        if self.confusion.shape != (s, k, c, c):
            raise ValueError(f"confusion has shape {self.confusion.shape}; expected {(s, k, c, c)}")
        if self.ce_bits.shape != (s, k) or self.prior.shape != (c,):
            raise ValueError("ce_bits must be [states, lags] and prior [symbols]")
        if (self.block_correct is None) != (self.block_support is None):
            raise ValueError("block_correct and block_support come together")
        if self.block_correct is not None:
            r, b = self.block_correct.shape[:2]
            if r != self.seeds or self.block_correct.shape[2:] != (s, k, c) or self.block_support.shape != (b, s, k, c):
                raise ValueError(f"block counts must be [seeds={self.seeds}, B, {s}, {k}, {c}] and [B, {s}, {k}, {c}]")
        if self.block_nll is not None and (
            self.block_correct is None or self.block_nll.shape != self.block_correct.shape
        ):
            raise ValueError("block_nll needs block counts and has their shape [seeds, B, states, lags, symbols]")

    # ------------------------------------------------------------------ derived
    @property
    def support(self) -> np.ndarray:
        """``[S, K, C]`` test positions whose target is each symbol."""
        return self.confusion.sum(-1) // self.seeds

    @property
    def correct(self) -> np.ndarray:
        """``[S, K, C]`` correctly recalled positions per symbol (the mean over seeds)."""
        diagonal = np.diagonal(self.confusion, axis1=-2, axis2=-1)
        return diagonal if self.seeds == 1 else diagonal / self.seeds

    @property
    def accuracy(self) -> np.ndarray:
        """``[S, K]`` overall recall (marginal accuracy per lag); NaN where a lag has no test position."""
        return _rate(self.correct.sum(-1), self.support.sum(-1))

    @property
    def recall(self) -> np.ndarray:
        """``[S, K, C]`` per-symbol recall; NaN where support < ``min_support``."""
        sup = self.support
        return np.where(sup >= self.min_support, self.correct / np.maximum(sup, 1), np.nan)

    def recall_ci(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Interval ``(low, high)`` of :attr:`recall`, each ``[S, K, C]`` (NaN like recall).

        With block counts: ``recall ± z·sqrt(var_test + var_seed)``, ``var_test`` the block
        bootstrap variance of the seed mean and ``var_seed`` the variance of recall between seeds
        (0 for one seed), clipped to [0, 1]. Without (older files, streamed probes): Wilson
        intervals, which treat positions as independent and ignore probe training.
        """
        if self.block_correct is None:
            lo, hi = wilson(self.correct, self.support, z)
        else:
            var = self._variances[0]
            half = z * np.sqrt(var)
            lo, hi = np.clip(self.recall - half, 0, 1), np.clip(self.recall + half, 0, 1)
        low_support = self.support < self.min_support
        return np.where(low_support, np.nan, lo), np.where(low_support, np.nan, hi)

    def accuracy_ci(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Interval ``(low, high)`` of :attr:`accuracy`, each ``[S, K]`` (as :meth:`recall_ci`)."""
        if self.block_correct is None:
            return wilson(self.correct.sum(-1), self.support.sum(-1), z)
        half = z * np.sqrt(self._variances[1])
        return np.clip(self.accuracy - half, 0, 1), np.clip(self.accuracy + half, 0, 1)

    @property
    def seed_accuracy(self) -> np.ndarray:
        """``[R, S, K]`` marginal recall of each probe seed (one row without block counts)."""
        if self.block_correct is None:
            return self.accuracy[None]
        return _rate(self.block_correct.sum((1, -1)), self.block_support.sum((0, -1)))

    @cached_property
    def _variances(self) -> tuple[np.ndarray, np.ndarray]:
        """Test-sampling (block bootstrap) plus probe-seed variances of recall ``[S, K, C]`` and of
        the marginal ``[S, K]`` (see :meth:`recall_ci`)."""
        return block_bootstrap_variance(self.block_correct, self.block_support)

    def at_baseline(self, z: float = 1.96) -> np.ndarray:
        """``[S, K, C]`` bool: cells whose interval includes their baseline — the ``shuffled:``
        control's recall of the same state, lag and symbol where the signature has it, else the
        symbol's prior (chance recall of guessing by the prior)."""
        lo, hi = self.recall_ci(z)
        base = np.broadcast_to(self.prior, lo.shape).copy()
        for i, state in enumerate(self.states):
            control = f"shuffled:{state}"
            if control in self.states:
                base[i] = np.nan_to_num(self.recall[self.states.index(control)], nan=0.0)
        return (lo <= base) & (base <= hi)

    @property
    def prior_ce_bits(self) -> np.ndarray:
        """``[S, K]`` test cross-entropy in bits of guessing by the training prior, on each decoder's
        own test positions: what a decoder that learned nothing but the prior scores (NaN as
        :attr:`accuracy`). A target never seen in training gets the rarest seen target's probability."""
        seen = self.prior > 0
        log_prior = np.log2(np.where(seen, self.prior, self.prior[seen].min()))
        support = self.support
        return _rate(-(support * log_prior).sum(-1), support.sum(-1))

    @property
    def info_bits(self) -> np.ndarray:
        """``[S, K]`` information kept: ``CE(prior) - CE`` in bits, both on the decoder's test
        positions (0 = no better than the prior; :attr:`prior_ce_bits`)."""
        return self.prior_ce_bits - self.ce_bits

    @property
    def majority_rate(self) -> np.ndarray:
        """``[S, K]`` accuracy of always answering the most frequent training symbol (NaN as :attr:`accuracy`)."""
        return _rate(self.support[..., int(np.argmax(self.prior))], self.support.sum(-1))

    @property
    def prior_rate(self) -> np.ndarray:
        """``[S, K]`` expected accuracy of guessing by sampling the training prior (NaN as :attr:`accuracy`)."""
        return _rate((self.support * self.prior).sum(-1), self.support.sum(-1))

    @property
    def forward_recall(self) -> np.ndarray | None:
        """``[C]`` the model's own next-symbol accuracy per true symbol (NaN on low support)."""
        if self.forward_confusion is None:
            return None
        sup = self.forward_confusion.sum(-1)
        return np.where(sup >= self.min_support, np.diagonal(self.forward_confusion) / np.maximum(sup, 1), np.nan)

    @property
    def real_states(self) -> list[str]:
        """The probed states: not a control, not a decoder given the baseline, not the baseline."""
        return [s for s in self.states if not s.startswith((*CONTROL_PREFIXES, GIVEN)) and s != BACKWARD]

    def conditional_bits(self, state: str, z: float = 1.96) -> dict[str, Any]:
        """Memory beyond inference: what ``state`` holds about ``x_{t-δ}`` beyond what the later
        symbols imply, ``I(S; X_{t-δ} | X_{t-δ+1..t}) ≈ CE(backward) − CE(given:state)`` in bits per
        position, from the two decoders' cross-entropy on the same test positions.

        Returns a dict of ``bits [K]`` per lag with ``low``/``high`` (the two-source interval of
        :meth:`recall_ci`: block bootstrap plus seed spread), ``cells [K, C]`` per true symbol (NaN
        where support < ``min_support``) with ``cells_low``/``cells_high``, and ``total`` (bits
        summed over the lags) with ``total_low``/``total_high``. KeyError without the ``backward``
        and ``given:`` states, ValueError without per-block cross-entropy.
        """
        given, base = self.index(GIVEN + state), self.index(BACKWARD)
        if self.block_nll is None:
            raise ValueError("this signature has no per-block cross-entropy (an older file or a streamed probe)")
        diff = (self.block_nll[:, :, base] - self.block_nll[:, :, given]) / math.log(2)  # [R, B, K, C]
        support = self.block_support[:, given].astype(np.float64)  # [B, K, C]
        seed_bits = bits_per_seed(diff, support)  # [R, K]
        bits = seed_bits.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cells = np.where(support.sum(0) >= self.min_support, diff.sum(1).mean(0) / support.sum(0), np.nan)
            weights = block_weights(diff.shape[1])  # the resamples of block_bootstrap_variance
            per_lag = np.einsum("nb,rbk->nrk", weights, diff.sum(-1)) / (weights @ support.sum(-1))[:, None]
        var_cells, var_bits = block_bootstrap_variance(diff, support)
        var_total = float(np.var(np.nansum(per_lag, -1).mean(1)))  # the seed mean's total, resampled
        if len(diff) > 1:
            var_total += float(np.var(np.nansum(seed_bits, -1), ddof=1))
        total = float(np.nansum(bits))
        half, cells_half, total_half = z * np.sqrt(var_bits), z * np.sqrt(var_cells), z * math.sqrt(var_total)
        return {
            "bits": bits,
            "low": bits - half,
            "high": bits + half,
            "cells": cells,
            "cells_low": cells - cells_half,
            "cells_high": cells + cells_half,
            "total": total,
            "total_low": total - total_half,
            "total_high": total + total_half,
        }

    def index(self, state: str) -> int:
        try:
            return self.states.index(state)
        except ValueError:
            raise KeyError(f"state {state!r} not in signature; it has {self.states}") from None

    def select(self, states: list[str] | None = None, lags: list[int] | None = None) -> Signature:
        """A signature with only ``states`` and ``lags`` (in those orders; None: all). KeyError naming
        a state or lag it does not have."""
        idx = list(range(len(self.states))) if states is None else [self.index(s) for s in states]
        missing = [lag for lag in lags or [] if lag not in self.lags]
        if missing:
            raise KeyError(f"lags {missing} not in signature; it has {self.lags}")
        ks = list(range(len(self.lags))) if lags is None else [self.lags.index(lag) for lag in lags]
        cells = np.ix_(idx, ks)
        return Signature(
            [self.states[i] for i in idx],
            [self.lags[k] for k in ks],
            list(self.symbols),
            self.confusion[cells],
            self.ce_bits[cells],
            self.prior,
            self.forward_confusion,
            self._cut_meta({self.states[i] for i in idx}, ks),
            self.min_support,
            self.seeds,
            None if self.block_correct is None else self.block_correct[:, :, idx][:, :, :, ks],
            None if self.block_support is None else self.block_support[:, idx][:, :, ks],
            None if self.block_nll is None else self.block_nll[:, :, idx][:, :, :, ks],
        )

    def _cut_meta(self, states: set[str], ks: list[int]) -> dict[str, Any]:
        """``meta`` as it describes a cut to ``states`` and the lags at indices ``ks``: the per-head
        records (``convergence``, ``dev_loss``) of those states only, and every per-lag list (the
        records', the probe's ``lags`` and ``later_symbols``) at those lags."""

        def at(values: list[Any]) -> list[Any]:
            return [values[k] for k in ks]

        meta = dict(self.meta)
        if "convergence" in meta:
            meta["convergence"] = {
                key: {name: at(values) for name, values in record.items()}
                for key, record in meta["convergence"].items()
                if head_state(key) in states
            }
        if "dev_loss" in meta:
            meta["dev_loss"] = {
                key: at(losses) for key, losses in meta["dev_loss"].items() if head_state(key) in states
            }
        probe = meta.get("probe")
        if isinstance(probe, dict) and list(probe.get("lags") or []) == self.lags:
            meta["probe"] = {**probe, **{name: at(probe[name]) for name in ("lags", "later_symbols") if name in probe}}
        return meta

    def provenance(self) -> str:
        """Which probe produced the signature and, for a trained probe, whether every decoder
        converged: the line every table of it should carry."""
        probe = self.meta.get("probe", {})
        kind = probe.get("kind") or {"quick": "ridge"}.get(probe.get("mode"), probe.get("mode"))
        if kind == "ridge":
            return "ridge preview (closed form, not a converged MLP signature)"
        if kind == "count_table":
            return "count-table decoder (exact for an n-gram model)"
        if kind == "backward_context":
            return (
                f"backward-context baseline: a reversed {probe['order']}-gram reading only the symbols after the target"
            )
        heads = [ok for record in self.meta.get("convergence", {}).values() for ok in record["converged"]]
        if not heads:
            return "MLP probe (convergence not recorded: a fixed-epoch signature)"
        stopped = len(heads) - sum(heads)
        state = f"all {len(heads)} decoders converged" if not stopped else f"{stopped} of {len(heads)} NOT converged"
        return f"MLP probe, {state}, {self.seeds} seed{'s' * (self.seeds > 1)}"

    def table(self) -> str:
        """Marginal recall per lag (rows) and state (columns) as aligned text under its
        :meth:`provenance`, with the half-width of its interval (:meth:`accuracy_ci`) where the
        signature has block counts."""
        spread = self.block_correct is not None
        width = max(12 + 7 * spread, *(len(s) + 2 for s in self.states))
        lo, hi = self.accuracy_ci()
        head = "lag".rjust(5) + "".join(s.rjust(width) for s in self.states) + "majority".rjust(10)
        rows = [f"({self.provenance()})", head]
        for j, lag in enumerate(self.lags):
            cells = [
                f"{self.accuracy[i, j]:.3f}" + (f" ±{(hi[i, j] - lo[i, j]) / 2:.3f}" if spread else "")
                for i in range(len(self.states))
            ]
            rows.append(f"{lag:5d}" + "".join(c.rjust(width) for c in cells) + f"{self.majority_rate[0, j]:10.3f}")
        return "\n".join(rows)

    @property
    def given_states(self) -> list[str]:
        """The states with a decoder on top of the backward-context baseline (``given:<state>``),
        controls included; empty when the signature lacks them, the baseline or its per-block
        cross-entropy."""
        if BACKWARD not in self.states or self.block_nll is None:
            return []
        return [s.removeprefix(GIVEN) for s in self.states if s.startswith(GIVEN)]

    def memory_table(self) -> str:
        """Bits per lag (rows) of each state with a ``given:`` decoder (columns): what it holds about
        ``x_{t-δ}`` (``CE(prior) − CE``, :attr:`info_bits`) and, after the slash, what it holds
        beyond what the later symbols imply (:meth:`conditional_bits`, ± the half-width of its
        interval); the last row sums the lags. Empty without the baseline's decoders."""
        states = self.given_states
        if not states:
            return ""
        bits = {s: self.conditional_bits(s) for s in states}
        width = max(24, *(len(s) + 2 for s in states))
        rows = [
            "bits of x(t−δ) in the state: all it holds / beyond what the later symbols imply (± 95 % interval)",
            "lag".rjust(5) + "".join(s.rjust(width) for s in states) + "baseline CE".rjust(13),
        ]
        base = self.ce_bits[self.index(BACKWARD)]
        for j, lag in enumerate(self.lags):
            cells = [
                f"{self.info_bits[self.index(s), j]:.3f} / {b['bits'][j]:.3f} ±{(b['high'][j] - b['low'][j]) / 2:.3f}"
                for s, b in bits.items()
            ]
            rows.append(f"{lag:5d}" + "".join(c.rjust(width) for c in cells) + f"{base[j]:13.3f}")
        totals = [
            f"{np.nansum(self.info_bits[self.index(s)]):.2f} / {b['total']:.2f} ±{(b['total_high'] - b['total_low']) / 2:.2f}"
            for s, b in bits.items()
        ]
        rows.append("  sum" + "".join(c.rjust(width) for c in totals))
        return "\n".join(rows)

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the signature as one ``.npz`` (atomic)."""
        arrays = {
            "confusion": self.confusion.astype(np.int64),
            "ce_bits": self.ce_bits.astype(np.float64),
            "prior": self.prior.astype(np.float64),
        }
        if self.forward_confusion is not None:
            arrays["forward_confusion"] = self.forward_confusion.astype(np.int64)
        if self.block_correct is not None:
            arrays["block_correct"] = self.block_correct.astype(np.int32)
            arrays["block_support"] = self.block_support.astype(np.int32)
        if self.block_nll is not None:
            arrays["block_nll"] = self.block_nll.astype(np.float64)
        axes = {"state": self.states, "lag": self.lags, "symbol": self.symbols}
        return write_labelled(path, SCHEMA, axes, self.min_support, self.meta, arrays, seeds=self.seeds)

    @classmethod
    def load(cls, path: str | Path) -> Signature:
        """The signature saved at ``path``: FileNotFoundError if there is none, :class:`SignatureError`
        if the file is not one (the message names what it lacks and what writes one)."""
        head, z = read_labelled(path, SCHEMAS, "signature", WRITER, ("confusion", "ce_bits", "prior"))
        axes = head["axes"]
        return cls(
            list(axes["state"]),
            [int(x) for x in axes["lag"]],
            list(axes["symbol"]),
            z["confusion"],
            z["ce_bits"],
            z["prior"],
            z.get("forward_confusion"),
            head["meta"],
            int(head["min_support"]),
            int(head.get("seeds", 1)),
            z.get("block_correct"),
            z.get("block_support"),
            z.get("block_nll"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signature):
            return NotImplemented
        same_fwd = _same(self.forward_confusion, other.forward_confusion)
        return (
            self.states == other.states
            and self.lags == other.lags
            and self.symbols == other.symbols
            and np.array_equal(self.confusion, other.confusion)
            and np.array_equal(self.ce_bits, other.ce_bits, equal_nan=True)
            and np.array_equal(self.prior, other.prior)
            and same_fwd
            and self.meta == other.meta
            and self.min_support == other.min_support
            and self.seeds == other.seeds
            and _same(self.block_correct, other.block_correct)
            and _same(self.block_support, other.block_support)
            and _same(self.block_nll, other.block_nll)
        )


def head_state(key: str) -> str:
    """The state of a per-head record's key ``<state>@<keep prob>#<seed>`` (``meta["convergence"]``)."""
    return key.rpartition("#")[0].rpartition("@")[0]


def bits_per_seed(diff: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``[R, K]`` each seed's mean of ``diff`` ``[R, B, K, C]`` (bits summed per block, lag and
    symbol) over the positions ``support`` ``[B, K, C]`` counts."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return diff.sum((1, -1)) / support.sum((0, -1))


def _rate(hits: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``hits / n`` elementwise, NaN where ``n == 0`` (no position: no estimate, not 0)."""
    return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def write_labelled(
    path: str | Path,
    schema: str,
    axes: dict[str, list],
    min_support: int,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    **head_fields: Any,
) -> Path:
    """Write ``arrays`` as one compressed ``.npz`` (atomic) with a JSON ``meta`` entry naming the
    ``schema``, the ``axes`` labels, ``min_support``, any ``head_fields`` and the provenance ``meta``."""
    head = {"schema": schema, "axes": axes, "min_support": min_support, **head_fields, "meta": meta}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, meta=np.array(json.dumps(head, default=_jsonable)))
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def read_labelled(
    path: str | Path, schema: str | tuple[str, ...], what: str, writer: str, arrays: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON head and the arrays of a :func:`write_labelled` file of ``schema`` (or one of
    several) that holds at least ``arrays``; ``what`` and ``writer`` (which command writes it) name
    the file in errors: FileNotFoundError if there is none, :class:`SignatureError` if it is not one."""
    schemas = (schema,) if isinstance(schema, str) else schema
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist; {writer}")
    wrong = f"{path} is not a memsig {what} file"
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise SignatureError(f"{wrong}: it is not a .npz archive; {writer}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise SignatureError(f"{wrong}: it holds one array, not a .npz archive; {writer}")
    with z:
        missing = [k for k in ("meta", *arrays) if k not in z.files]
        if "meta" in missing:
            raise SignatureError(f"{wrong}: the archive lacks the arrays {missing} (it has {z.files}); {writer}")
        try:
            head = json.loads(str(z["meta"]))
        except ValueError:
            head = None
        found = head.get("schema") if isinstance(head, dict) else None
        if found not in schemas:
            raise SignatureError(
                f"{wrong}: its 'meta' entry names schema {found!r}, expected {' or '.join(schemas)}; {writer}"
            )
        if missing:
            raise SignatureError(f"{wrong}: the archive lacks the arrays {missing} (it has {z.files}); {writer}")
        return head, {k: z[k] for k in z.files if k != "meta"}


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)
