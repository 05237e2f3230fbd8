"""The backward-context baseline: how much of ``x_{t-δ}`` the later symbols alone imply.

In natural text, recalling ``x_{t-δ}`` from the state at t is partly inference: a decoder that
knows only the δ symbols *after* it, ``x_{t-δ+1} … x_t``, guesses it from the language's own
statistics, with no memory of ``x_{t-δ}`` at all. This baseline is that decoder: a Kneser-Ney
n-gram (:class:`~memsig.models.ngram.NGramLM`) fitted on the *reversed* training split, which
predicts ``x_{t-δ}`` from ``x_{t-δ+1}, x_{t-δ+2}, …``, backing off to fewer where a context was
never seen. How many later symbols it reads at lag δ (0 … min(δ, order − 1); 0: the training
prior) is chosen on the dev split, by cross-entropy: where the counts are too sparse to gain from
more context, it reads fewer, so it is never worse than the prior it could fall back to. For δ ≤ 0
no later symbol is known and it is the prior.

:func:`backward_baseline` scores it on exactly the probes' test positions (the lag convention of
:mod:`memsig.probe.targets`) and their bootstrap blocks, as a :class:`Signature` of one state,
``"backward"``: recall per symbol and lag, cross-entropy in bits and intervals come as for any
probe, and a signature minus it (:func:`~memsig.plots.difference_map`) is the *lift*: recall the
later symbols cannot explain.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from memsig.data.text import TextDataModule
from memsig.models.ngram import NGramLM
from memsig.probe.cache import SplitStates
from memsig.probe.signature import BACKWARD, Signature
from memsig.probe.targets import LeftContext, StreamBlocks, lag_targets

STATE = BACKWARD


def reads_text(datamodule: Any) -> bool:
    """Whether the baseline applies to ``datamodule``: a text stream whose symbols are its inputs."""
    return isinstance(datamodule, TextDataModule)


def later_context(ext: Tensor, lead: int, rows: Tensor, cols: Tensor, lag: int, n: int) -> Tensor:
    """The ``n`` symbols after each target ``x_{t-δ}`` (n ≤ δ) as an n-gram context read backwards.

    ``ext`` is ``[B, lead + T]`` labels (``lead`` of left context, :class:`LeftContext`), ``rows``
    and ``cols`` ``[P]`` the positions t in the window. Returns ``[P, n]`` ids in reading order of
    the reversed text: the last column ``x_{t-δ+1}``, the one before it ``x_{t-δ+2}``, ….
    """
    after = torch.arange(n, 0, -1)  # column i holds the (n − i)-th symbol after the target
    return ext[rows[:, None], (lead + cols - lag)[:, None] + after]


class BackwardDecoder:
    """Log-probabilities of ``x_{t-δ}`` from its ``n`` later symbols: an (n + 1)-gram of the
    reversed training text (its highest order counts occurrences, so it predicts from exactly n
    symbols, backing off only where they were never seen), or the training prior for n = 0."""

    def __init__(self, datamodule: Any, order: int) -> None:
        reversed_train = datamodule.ids("train").long().flip(0)
        self.width = order - 1
        self.models = {n: NGramLM(datamodule.vocab, n + 1).fit(reversed_train) for n in range(1, order)}
        self.prior = torch.bincount(reversed_train, minlength=len(datamodule.vocab)).double()
        self.prior_logp = (self.prior / self.prior.sum()).log()

    def context_log_probs(self, context: Tensor, symbols: Tensor | None = None) -> Tensor:
        """``[P, C]`` float64 from contexts ``[P, n]`` in reading order (:func:`later_context`), or
        ``[P, W]`` of the given ``symbols`` ``[P, W]`` only (the same values, at W/C of the cost)."""
        n = context.shape[1]
        if n == 0:
            prior = self.prior_logp.expand(len(context), -1)
            return prior if symbols is None else prior.gather(1, symbols)
        length = torch.full((len(context),), n, dtype=torch.long)
        return self.models[n].next_log_probs(context, length, symbols)

    def log_probs(
        self, ext: Tensor, lead: int, rows: Tensor, cols: Tensor, lag: int, n: int, symbols: Tensor | None = None
    ) -> Tensor:
        """``[P, C]`` float64, or ``[P, W]`` of ``symbols`` (:meth:`context_log_probs`)."""
        return self.context_log_probs(later_context(ext, lead, rows, cols, lag, n), symbols)

    def most_later(self, lag: int) -> int:
        """The most later symbols it can read at ``lag``."""
        return min(max(lag, 0), self.width)

    def choose_reads(self, datamodule: Any, lags: list[int]) -> list[int]:
        """How many later symbols to read at each lag: the number with the lowest dev cross-entropy."""
        dev_nll = np.zeros((len(lags), self.width + 1))
        for j, ext, lead, rows, cols, y, _ in _targets(datamodule, "dev", lags):
            for n in range(self.most_later(lags[j]) + 1):
                dev_nll[j, n] -= float(self.log_probs(ext, lead, rows, cols, lags[j], n, y[:, None]).sum())
        return [int(np.argmin(dev_nll[j, : self.most_later(lag) + 1])) for j, lag in enumerate(lags)]


class LaterSymbolsTable:
    """The baseline's log-probabilities at cached positions, looked up rather than queried.

    At lag δ the baseline reads the ``n = reads[δ]`` symbols after the target, which a state cache
    holds as each position's symbols at lags ``0 … max(lags) − 1``
    (:attr:`~memsig.probe.cache.SplitStates.later`). Each distinct context of the ``splits`` is
    queried once (an n-gram query costs far more than a lookup, and contexts repeat); a batch of
    positions then costs one sorted search per lag.

    Args:
        decoder: the backward decoder.
        lags: the lags δ (K).
        reads: later symbols read at each lag (:meth:`BackwardDecoder.choose_reads`).
        splits: the cached splits whose positions will be looked up.
        chunk: positions per step while collecting contexts.
    """

    def __init__(
        self,
        decoder: BackwardDecoder,
        lags: list[int],
        reads: list[int],
        splits: Sequence[SplitStates],
        chunk: int = 262144,
    ) -> None:
        self.lags, self.reads = lags, reads
        self.prior_logp = decoder.prior_logp.float()
        self.num_symbols = c = len(decoder.prior)
        self.tables: dict[int, tuple[np.ndarray, Tensor]] = {}  # n -> sorted codes [U], log-probs [U, C]
        for n in sorted(set(reads) - {0}):
            if c**n >= 2**63:
                raise ValueError(f"{n} later symbols of {c} cannot be packed in 64 bits: lower baseline order")
            columns = [j for j, r in enumerate(reads) if r == n]
            codes = np.unique(
                np.concatenate(
                    [
                        np.unique(self._codes(split.later[start : start + chunk], columns, n))
                        for split in splits
                        for start in range(0, len(split), chunk)
                    ]
                )
            )
            context = torch.from_numpy(np.stack([(codes // c**i) % c for i in range(n - 1, -1, -1)], 1))
            logp = torch.cat([decoder.context_log_probs(context[i : i + chunk]) for i in range(0, len(codes), chunk)])
            self.tables[n] = codes, logp.float()

    def _codes(self, later: np.ndarray, columns: list[int], n: int) -> np.ndarray:
        """``[P, len(columns)]`` int64: each position's ``n`` later symbols at those lag columns as
        one base-C number (the reading order of :func:`later_context`, first symbol most significant)."""
        later = np.asarray(later, dtype=np.int64).clip(min=0)  # -1: no target there, never looked up
        code = np.zeros((len(later), len(columns)), dtype=np.int64)
        for j_out, j in enumerate(columns):
            lag = self.lags[j]
            for i in range(lag - n, lag):  # lag columns δ − n … δ − 1: x_{t-δ+n} … x_{t-δ+1}
                code[:, j_out] = code[:, j_out] * self.num_symbols + later[:, i]
        return code

    def __call__(self, later: np.ndarray) -> Tensor:
        """``[P, K, C]`` float32 log-probabilities of the target of every lag at positions whose
        later symbols are ``later`` ``[P, W]``."""
        out = self.prior_logp.repeat(len(later), len(self.lags), 1)
        for n, (codes, logp) in self.tables.items():
            columns = [j for j, r in enumerate(self.reads) if r == n]
            found = np.searchsorted(codes, self._codes(later, columns, n)).clip(max=len(codes) - 1)
            out[:, columns] = logp[torch.from_numpy(found)]
        return out


def _targets(
    datamodule: Any, split: str, lags: list[int], blocks: StreamBlocks | None = None
) -> Iterator[tuple[int, Tensor, int, Tensor, Tensor, Tensor, Tensor | None]]:
    """Per batch and lag index j: ``(j, ext, lead, rows, cols, targets, blocks)`` of the positions with
    a target at ``lags[j]`` (the probes' lag convention); their bootstrap blocks when ``blocks`` is given."""
    data, left = datamodule.dataset(split), LeftContext(max(0, max(lags)))
    for i in range(len(data)):
        batch = data[i]
        inputs, history, carry = batch["inputs"].long(), batch["history"], bool(batch["carry"])
        ext = left.extend(split, inputs, carry)
        labels, valid = lag_targets(ext, history, batch["mask"], lags)
        block = None
        if blocks is not None:
            keep = valid.any(-1).flatten().nonzero().squeeze(1)
            block = torch.full((inputs.numel(),), -1, dtype=torch.long)
            block[keep] = torch.tensor(blocks(history, carry, keep), dtype=torch.long)
        lead, t = ext.shape[1] - inputs.shape[1], inputs.shape[1]
        for j in range(len(lags)):
            rows, cols = valid[..., j].nonzero(as_tuple=True)
            yield j, ext, lead, rows, cols, labels[rows, cols, j], None if block is None else block[rows * t + cols]


def backward_baseline(
    datamodule: Any,
    lags: Sequence[int],
    order: int = 8,
    block_len: int = 256,
    meta: dict[str, Any] | None = None,
) -> Signature:
    """Signature of the backward-context decoder (module docstring) on the test split of a text
    ``datamodule`` at ``lags``: state ``"backward"``, one seed, block counts for its intervals.
    ``order``: the n-gram's order (it reads at most ``order − 1`` later symbols);
    ``meta["probe"]["later_symbols"]``: how many it read at each lag (chosen on dev)."""
    vocab, lags = datamodule.vocab, list(lags)
    c, k = len(vocab), len(lags)
    decoder = BackwardDecoder(datamodule, order)
    reads = decoder.choose_reads(datamodule, lags)
    blocks = StreamBlocks(block_len)
    confusion = torch.zeros(k, c, c, dtype=torch.long)
    nll = torch.zeros(k, dtype=torch.float64)
    scored: list[tuple[Tensor, Tensor, Tensor]] = []  # block · K + lag, symbol, hit
    for j, ext, lead, rows, cols, y, block in _targets(datamodule, "test", lags, blocks):
        logp = decoder.log_probs(ext, lead, rows, cols, lags[j], reads[j])
        pred = logp.argmax(-1)
        confusion[j] += torch.bincount(y * c + pred, minlength=c * c).view(c, c)
        nll[j] -= logp.gather(1, y[:, None]).sum()
        scored.append((block * k + j, y, pred == y))  # type: ignore[operator]
    cell, y, hit = (torch.cat(x) for x in zip(*scored))
    flat, size = (cell * c + y).numpy(), blocks.num_blocks * k * c
    correct = np.bincount(flat, weights=hit.numpy(), minlength=size).reshape(blocks.num_blocks, 1, k, c)
    support = np.bincount(flat, minlength=size).reshape(blocks.num_blocks, 1, k, c)
    n = confusion.sum((-1, -2)).numpy()
    ce_bits = np.where(n > 0, nll.numpy() / np.maximum(n, 1) / np.log(2), np.nan)
    settings = {"kind": "backward_context", "order": order, "lags": lags, "later_symbols": reads}
    return Signature(
        [STATE],
        lags,
        list(vocab.labels),
        confusion[None].numpy(),
        ce_bits[None],
        (decoder.prior / decoder.prior.sum()).numpy(),
        None,
        {"probe": {**settings, "block_len": block_len}, **(meta or {})},
        block_correct=np.rint(correct[None]).astype(np.int64),
        block_support=support.astype(np.int64),
    )


def scored_baseline(sig: Signature, order: int, meta: dict[str, Any] | None = None) -> Signature | None:
    """The baseline as :func:`backward_baseline` would score it (``meta`` as there), taken from a
    probe signature that already scored it as its state ``"backward"`` (an MLP probe with
    ``baseline_order`` = ``order``) rather than fitted again; None when ``sig`` has no such state."""
    probe = sig.meta.get("probe", {})
    if STATE not in sig.states or probe.get("baseline_order") != order or sig.block_correct is None:
        return None
    base = sig.select([STATE])
    settings = {"kind": "backward_context", "order": order, "lags": list(sig.lags)}
    return Signature(
        [STATE],
        list(sig.lags),
        list(sig.symbols),
        base.confusion // sig.seeds,  # the same row in every seed's set
        base.ce_bits,
        sig.prior,
        None,
        {
            "probe": {**settings, "later_symbols": probe["later_symbols"], "block_len": probe["block_len"]},
            **(meta or {}),
        },
        sig.min_support,
        block_correct=base.block_correct[:1],
        block_support=base.block_support,
    )
