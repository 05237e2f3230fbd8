"""Input statistics λ for the factorized-kernel LM, computed by the data pipeline.

The factorized LM (:mod:`memsig.models.factorized`) runs the recurrent kernel
``W = W_0 + Σ_k λ_k u_k v_kᵀ``, one rank-one basis per symbol bigram (K = V²; or per
symbol, K = V, with ``statistic=unigram``). :class:`InputStatistics` turns text into λ:

- **frequencies** ``f`` ``[K]``: add-``smoothing`` counts of the statistic, normalised to
  sum to 1. With ``context=previous`` (default) a segment's ``f`` counts the ``window``
  segments before it in its split, so λ never sees the text the LM predicts;
  ``context=self`` counts the segment itself, the paper's choice, which leaks the
  segment's own future into the LM (its perplexities are then optimistic).
  The model rescales ``f`` (``FactorizedCharLM.lambda_norm``): normalised frequencies
  are ~1e-3 each, too small for the bases to train.
- **scope**, which batches share one λ:

  ``segment``
      every segment its own λ (``lam`` ``[B, K]``); the model runs an exact time loop.
  ``cluster``
      segments are grouped by k-means on their standardised ``f`` into ``clusters``
      groups (fitted on train, dev/test segments go to the nearest centre); each batch
      holds segments of one group and carries their mean ``f`` (``lam`` ``[K]``), so the
      model folds the kernel once per batch and runs the fused ``nn.LSTM``. λ still varies
      from batch to batch, which keeps W_0 and the bases apart.
  ``domain``
      one λ per corpus: the frequencies of its whole training split, for every split
      (``lam`` ``[K]``). With a single training corpus λ is then constant, and W_0 and
      ``Σ λ_k W_k`` cannot be told apart: per-basis signatures mean nothing. Use it to run
      a model trained with another scope on a new corpus, or train on several.

``segment`` and ``cluster`` need ``data.regime=segment``; ``domain`` works in either regime.
Memory: a split's statistics are read from its symbol ids (memory-mapped, see
:mod:`memsig.data.symbols`) when they are needed: λ is computed per batch, and chunks of
segments are streamed for the totals, the moments and the k-means.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from memsig.data.symbols import SplitIds

Statistic = Literal["bigram", "unigram"]
Scope = Literal["segment", "cluster", "domain"]
Context = Literal["previous", "self"]
CHUNK = 2048  # segments per chunk when streaming a split's frequencies
CHUNK_STATISTICS = 1 << 22  # statistics per chunk when counting a whole split


@dataclass
class SplitCounts:
    """A split's statistics, segment by segment, read from its symbol ids, and how λ reads them.

    Segment ``i`` has statistics ``offsets[i]`` to ``offsets[i + 1]`` of the split (in order);
    its ``j``-th is the symbol at ``starts[i] + j`` (``unigram``) or the pair of symbols there and
    after (``bigram``, id ``a·V + b``).

    Attributes:
        symbols: ``[N]`` the split's symbol ids (uint8, memory-mapped when cached).
        starts: ``[n]`` long where each segment starts in ``symbols``.
        offsets: ``[n + 1]`` long cumulative statistics per segment.
        vocab_size: V.
        statistic, smoothing, window, context: as :class:`InputStatistics`.
    """

    symbols: Tensor
    starts: Tensor
    offsets: Tensor
    vocab_size: int
    statistic: Statistic
    smoothing: float
    window: int
    context: Context

    @property
    def dim(self) -> int:
        """K."""
        return self.vocab_size**2 if self.statistic == "bigram" else self.vocab_size

    def ids(self, q: Tensor) -> Tensor:
        """``[m]`` long the statistic ids at the positions ``q`` ``[m]`` of the split's statistics."""
        segment = torch.searchsorted(self.offsets, q, right=True) - 1
        at = self.starts[segment] + q - self.offsets[segment]
        first = self.symbols[at].long()
        return first * self.vocab_size + self.symbols[at + 1].long() if self.statistic == "bigram" else first

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def frequencies(self, index: Tensor) -> Tensor:
        """``[n, K]`` float32 normalised, smoothed frequencies ``f`` of the segments ``index`` ``[n]``."""
        return self.normalise(self.counts(index))

    def normalise(self, counts: Tensor) -> Tensor:
        """``[n, K]`` the smoothed frequencies ``f`` of raw counts ``[n, K]`` (from :meth:`counts`)."""
        counts = counts + self.smoothing
        return counts / counts.sum(1, keepdim=True)

    def counts(self, index: Tensor) -> Tensor:
        """``[n, K]`` float32 raw counts behind the λ of the segments ``index`` ``[n]`` (their context)."""
        index = index.long()
        start = (index - self.window).clamp(min=0) if self.context == "previous" else index
        stop = index if self.context == "previous" else index + 1
        lo, hi = self.offsets[start], self.offsets[stop]
        lengths = hi - lo
        row = torch.repeat_interleave(torch.arange(len(index)), lengths)
        pos = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        counts = torch.zeros(len(index), self.dim)
        counts.index_put_((row, self.ids(lo[row] + pos)), torch.ones(len(row)), accumulate=True)
        return counts

    def chunks(self, size: int = CHUNK) -> Iterator[Tensor]:
        """The frequencies of every segment, ``[≤size, K]`` at a time, in order."""
        for a in range(0, len(self), size):
            yield self.frequencies(torch.arange(a, min(a + size, len(self))))

    def total(self) -> Tensor:
        """``[K]`` the smoothed frequencies of the whole split (the ``domain`` λ)."""
        counts = torch.zeros(self.dim, dtype=torch.long)
        for a in range(0, int(self.offsets[-1]), CHUNK_STATISTICS):
            q = torch.arange(a, min(a + CHUNK_STATISTICS, int(self.offsets[-1])))
            counts += torch.bincount(self.ids(q), minlength=self.dim)
        counts = counts.float() + self.smoothing
        return counts / counts.sum()


def moments(counts: SplitCounts) -> tuple[Tensor, Tensor]:
    """``([K], [K])`` mean and standard deviation of the segments' frequencies (float64 sums)."""
    s = torch.zeros(counts.dim, dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for f in counts.chunks():
        s += f.double().sum(0)
        s2 += f.double().square().sum(0)
    n = max(len(counts), 1)
    mean = s / n
    return mean.float(), (s2 / n - mean.square()).clamp(min=0).sqrt().float()


class InputStatistics:
    """How λ is computed from text and which batches share one (see module docstring).

    Args:
        statistic: ``bigram`` (K = V², id ``a·V + b`` for the pair "ab") or ``unigram`` (K = V).
        smoothing: α added to every count before normalising (> 0: λ is defined for an empty context).
        context: ``previous`` (the ``window`` segments before; causal) or ``self``.
        window: segments counted with ``context=previous``.
        scope: ``segment``, ``cluster`` or ``domain``.
        clusters: k-means groups M for ``scope=cluster``.
        kmeans_iters: Lloyd iterations.
        seed: picks the initial centres.
    """

    def __init__(
        self,
        statistic: Statistic = "bigram",
        smoothing: float = 0.5,
        context: Context = "previous",
        window: int = 20,
        scope: Scope = "cluster",
        clusters: int = 16,
        kmeans_iters: int = 10,
        seed: int = 0,
    ) -> None:
        if statistic not in ("bigram", "unigram"):
            raise ValueError(f"data.lambdas.statistic must be bigram or unigram; got {statistic!r}")
        if scope not in ("segment", "cluster", "domain"):
            raise ValueError(f"data.lambdas.scope must be segment, cluster or domain; got {scope!r}")
        if context not in ("previous", "self"):
            raise ValueError(f"data.lambdas.context must be previous or self; got {context!r}")
        if smoothing <= 0 or window < 1 or clusters < 1:
            raise ValueError("data.lambdas needs smoothing > 0, window >= 1 and clusters >= 1")
        self.statistic, self.smoothing, self.context, self.window = statistic, smoothing, context, window
        self.scope, self.clusters, self.kmeans_iters, self.seed = scope, clusters, kmeans_iters, seed

    def dim(self, vocab_size: int) -> int:
        """K, the number of statistics (= bases of the factorized kernel)."""
        return vocab_size**2 if self.statistic == "bigram" else vocab_size

    def count(self, segments: SplitIds | list[Tensor], vocab_size: int) -> SplitCounts:
        """The :class:`SplitCounts` of a split's segments (:class:`~memsig.data.symbols.SplitIds`, or
        ``[n_i]`` id tensors)."""
        segments = segments if isinstance(segments, SplitIds) else SplitIds.of(segments)
        lengths = torch.from_numpy(segments.lengths)
        if self.statistic == "bigram":
            lengths = (lengths - 1).clamp(min=0)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        return SplitCounts(
            torch.from_numpy(segments.ids),
            torch.from_numpy(segments.starts),
            offsets,
            vocab_size,
            self.statistic,
            self.smoothing,
            self.window,
            self.context,
        )

    def kmeans(self, counts: SplitCounts) -> tuple[Tensor, Tensor, Tensor]:
        """``(centres [M, K], mean [K], std [K])``: k-means of the standardised frequencies of ``counts``.

        Streams the segments in chunks; an empty group keeps its centre.
        """
        mean, std = moments(counts)
        scale = torch.where(std > 0, std, torch.ones_like(std))
        m = min(self.clusters, len(counts))
        gen = torch.Generator().manual_seed(self.seed)
        first = torch.randperm(len(counts), generator=gen)[:m]
        centres = (counts.frequencies(first) - mean) / scale
        for _ in range(self.kmeans_iters):
            sums, sizes = torch.zeros_like(centres), torch.zeros(m)
            for f in counts.chunks():
                z = (f - mean) / scale
                group = torch.cdist(z, centres).argmin(1)
                sums.index_add_(0, group, z)
                sizes += torch.bincount(group, minlength=m).float()
            moved = sizes > 0
            centres[moved] = sums[moved] / sizes[moved, None]
        return centres, mean, scale

    def assign(self, counts: SplitCounts, centres: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """``[N]`` the nearest centre of every segment of ``counts``."""
        return torch.cat([torch.cdist((f - mean) / scale, centres).argmin(1) for f in counts.chunks()])


class LambdaBatches(Dataset):
    """A split's batches with λ added as ``lam``: ``[B, K]`` (scope ``segment``) or ``[K]``.

    Args:
        base: the batches; with scope ``segment``/``cluster`` they hold ``segment_ids`` ``[B]``.
        counts: the split's :class:`SplitCounts`.
        scope: ``segment`` (each row its own ``f``), ``cluster`` (the rows' mean ``f``) or
            ``domain`` (``domain`` for every batch).
        domain: ``[K]`` the corpus λ for scope ``domain``.
    """

    def __init__(self, base: Dataset, counts: SplitCounts, scope: Scope, domain: Tensor | None = None) -> None:
        self.base, self.counts, self.scope, self.domain = base, counts, scope, domain

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        if self.scope == "domain":
            item["lam"] = self.domain
        else:
            f = self.counts.frequencies(item["segment_ids"])
            item["lam"] = f if self.scope == "segment" else f.mean(0)
        return item
