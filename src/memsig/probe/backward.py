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

from memsig.models.ngram import NGramLM
from memsig.probe.signature import Signature
from memsig.probe.targets import LeftContext, StreamBlocks, lag_targets

STATE = "backward"


def later_context(ext: Tensor, lead: int, rows: Tensor, cols: Tensor, lag: int, n: int) -> Tensor:
    """The ``n`` symbols after each target ``x_{t-δ}`` (n ≤ δ) as an n-gram context read backwards.

    ``ext`` is ``[B, lead + T]`` labels (``lead`` of left context, :class:`LeftContext`), ``rows``
    and ``cols`` ``[P]`` the positions t in the window. Returns ``[P, n]`` ids in reading order of
    the reversed text: the last column ``x_{t-δ+1}``, the one before it ``x_{t-δ+2}``, ….
    """
    after = torch.arange(n, 0, -1)  # column i holds the (n − i)-th symbol after the target
    return ext[rows[:, None], (lead + cols - lag)[:, None] + after]


class _Decoder:
    """Log-probabilities of ``x_{t-δ}`` from its ``n`` later symbols: an (n + 1)-gram of the
    reversed training text (its highest order counts occurrences, so it predicts from exactly n
    symbols, backing off only where they were never seen), or the training prior for n = 0."""

    def __init__(self, datamodule: Any, order: int) -> None:
        reversed_train = datamodule.ids("train").long().flip(0)
        self.width = order - 1
        self.models = {n: NGramLM(datamodule.vocab, n + 1).fit(reversed_train) for n in range(1, order)}
        self.prior = torch.bincount(reversed_train, minlength=len(datamodule.vocab)).double()
        self.prior_logp = (self.prior / self.prior.sum()).log()

    def log_probs(self, ext: Tensor, lead: int, rows: Tensor, cols: Tensor, lag: int, n: int) -> Tensor:
        """``[P, C]`` float64."""
        if n == 0:
            return self.prior_logp.expand(len(rows), -1)
        context = later_context(ext, lead, rows, cols, lag, n)
        return self.models[n].next_log_probs(context, torch.full((len(rows),), n, dtype=torch.long))

    def most_later(self, lag: int) -> int:
        """The most later symbols it can read at ``lag``."""
        return min(max(lag, 0), self.width)


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
    decoder = _Decoder(datamodule, order)
    dev_nll = np.zeros((k, decoder.width + 1))
    for j, ext, lead, rows, cols, y, _ in _targets(datamodule, "dev", lags):
        for n in range(decoder.most_later(lags[j]) + 1):
            dev_nll[j, n] -= float(decoder.log_probs(ext, lead, rows, cols, lags[j], n).gather(1, y[:, None]).sum())
    reads = [int(np.argmin(dev_nll[j, : decoder.most_later(lag) + 1])) for j, lag in enumerate(lags)]
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
