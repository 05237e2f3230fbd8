"""The text DataModule: normalised corpora batched for truncated BPTT or whole segments.

State regime (``regime``), the same in training, evaluation and state extraction:

``stream`` (default)
    Each split is one continuous text: its segments joined by ``separator`` (a space).
    The text is cut into ``B`` parallel streams and read in consecutive windows of
    ``seq_len`` symbols; the model carries its recurrent state from one window to the
    next (truncated BPTT) and resets it only at the start of a split. Every position
    then has all of its stream's preceding text as history, so a memory probe at lag δ
    has a target at almost every position — with per-line resets only ~46% of
    tiny-shakespeare's positions have 20 symbols of history.
``segment``
    Each batch holds whole segments (length-bucketed, padded, masked) and the state
    starts from zero at every segment: the paper's per-segment regime.

Every batch is a dict::

    inputs   [B, T] long   symbol ids fed to the model
    targets  [B, T] long   the next symbol at each position (padding: 0, masked)
    mask     [B, T] bool   real positions
    history  [B, T] long   symbols of the same stream/segment before each position
    carry    bool          True when the batch continues the previous batch's streams
    segment_ids [B] long   (segment regime) each row's segment, its index in the split
    lam      [K] or [B, K] (with ``lambdas``) input statistics for the factorized LM

The text is normalised and encoded once into memory-mapped symbol ids (:mod:`memsig.data.symbols`,
cached under ``cache_dir``); splits, segments, windows and λ statistics are views and offsets into
them, so a corpus larger than memory trains with flat memory.

The training loader is a :class:`~memsig.data.loader.ResumableLoader`: checkpoints record how far into the
epoch training got, so a run resumed from a mid-epoch ``last.ckpt`` goes on with the next
window (the model saves the state it carries, see ``CharLM.on_save_checkpoint``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from memsig.data.corpora import Corpus
from memsig.data.io import CorpusError
from memsig.data.lambdas import InputStatistics, LambdaBatches, SplitCounts, moments
from memsig.data.loader import ResumableTraining
from memsig.data.symbols import SplitIds, encode_corpus
from memsig.vocab import Vocab

log = logging.getLogger(__name__)
Regime = Literal["stream", "segment"]
SPLITS = ("train", "dev", "test")
OUTSIDE_WARN = 0.05  # share of a corpus's characters outside the symbol set above which setup warns


class StreamBatches(Dataset):
    """Consecutive ``[B, T]`` windows over ``B`` parallel streams of one id sequence.

    The streams are views of ``ids`` (a memory-mapped split stays on disk); each window is
    widened to long when it is read.

    Args:
        ids: ``[N]`` symbol ids of the whole split.
        batch_size: number of parallel streams B (per rank).
        seq_len: window length T.
        rank, world_size: this process's share of the streams under DDP.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1) -> None:
        rows = batch_size * world_size
        length = len(ids) // rows
        if length < 2:
            raise CorpusError(
                f"a split of {len(ids)} symbols is too short for {rows} streams; lower data.batch_size or use more text"
            )
        streams = ids[: length * rows].view(rows, length)
        self.streams = streams[rank * batch_size : (rank + 1) * batch_size]
        self.seq_len = seq_len
        self.n_windows = math.ceil((length - 1) / seq_len)

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = i * self.seq_len
        stop = min(start + self.seq_len, self.streams.shape[1] - 1)
        inputs = self.streams[:, start:stop].long()
        b, t = inputs.shape
        return {
            "inputs": inputs,
            "targets": self.streams[:, start + 1 : stop + 1].long(),
            "mask": torch.ones(b, t, dtype=torch.bool),
            "history": torch.arange(start, stop).expand(b, t),
            "carry": i > 0,
        }


class SegmentBatches(Dataset):
    """Length-bucketed batches of whole segments, padded; the state resets per segment.

    Items also hold ``segment_ids`` ``[B]``: each row's segment (its index in ``segments``).

    Args:
        segments: the split's segments (:class:`~memsig.data.symbols.SplitIds`, or id tensors
            ``[n_i]``); segments shorter than 2 symbols are skipped.
        batch_size: segments per batch.
        rank, world_size: this process keeps every ``world_size``-th batch.
        ids: which of ``segments`` to batch, ascending (default: all).
        equal_share: first drop the last batches so every rank gets as many (training).
    """

    def __init__(
        self,
        segments: SplitIds | list[torch.Tensor],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        ids: list[int] | None = None,
        equal_share: bool = False,
    ) -> None:
        self.segments = segments if isinstance(segments, SplitIds) else SplitIds.of(segments)
        chosen = np.arange(len(self.segments)) if ids is None else np.asarray(ids, dtype=np.int64)
        kept = chosen[self.segments.lengths[chosen] >= 2]
        self.order = kept[np.argsort(self.segments.lengths[kept], kind="stable")]  # by length, then position
        firsts = range(0, len(self.order), batch_size)
        if equal_share:
            firsts = firsts[: len(firsts) - len(firsts) % world_size]
        self.firsts = firsts[rank::world_size]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.firsts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.order[self.firsts[i] : self.firsts[i] + self.batch_size]
        chosen = [self.segments[j].long() for j in index.tolist()]
        t = max(len(s) for s in chosen) - 1
        inputs = torch.zeros(len(chosen), t, dtype=torch.long)
        targets = torch.zeros_like(inputs)
        mask = torch.zeros(len(chosen), t, dtype=torch.bool)
        for r, s in enumerate(chosen):
            inputs[r, : len(s) - 1] = s[:-1]
            targets[r, : len(s) - 1] = s[1:]
            mask[r, : len(s) - 1] = True
        history = torch.arange(t).expand(len(chosen), t)
        return {
            "inputs": inputs,
            "targets": targets,
            "mask": mask,
            "history": history,
            "carry": False,
            "segment_ids": torch.from_numpy(index.copy()),
        }


def unigram_entropy(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy in nats of the symbol frequencies of ``ids`` ``[N]`` (the unigram baseline)."""
    counts = torch.bincount(ids.long().flatten(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


class TextDataModule(ResumableTraining, L.LightningDataModule):
    """Character-level batches of a text corpus (see module docstring for the regimes).

    Args:
        corpus: where the segments come from (a :class:`~memsig.data.corpora.Corpus`).
        vocab: symbol set and normalisation.
        batch_size: parallel streams (``stream``) or segments (``segment``) per batch.
        seq_len: window length for ``stream``.
        eval_batch_size: batch size for dev/test (default: ``batch_size``).
        regime: ``stream`` or ``segment``.
        separator: text joining consecutive segments in ``stream`` (must normalise to itself).
        fraction: share of training segments kept, chosen with ``fraction_seed`` (order kept).
        max_chars: cut every split to at most this many symbols (whole segments; for tests
            and smoke runs).
        lambdas: input statistics added to every batch as ``lam`` for the factorized LM
            (:mod:`memsig.data.lambdas`); None: none.
        cache_dir: where the encoded corpus is cached (:mod:`memsig.data.symbols`); None: encoded
            in memory at every setup.
    """

    def __init__(
        self,
        corpus: Corpus,
        vocab: Vocab,
        batch_size: int = 64,
        seq_len: int = 128,
        eval_batch_size: int | None = None,
        regime: Regime = "stream",
        separator: str = " ",
        fraction: float = 1.0,
        fraction_seed: int = 0,
        max_chars: int | None = None,
        lambdas: InputStatistics | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not _positive_int(value):
                raise ValueError(f"data.{name} must be a positive integer; got {value!r}")
        for name, value in (("eval_batch_size", eval_batch_size), ("max_chars", max_chars)):
            if value is not None and not _positive_int(value):
                raise ValueError(f"data.{name} must be a positive integer or null; got {value!r}")
        if regime not in ("stream", "segment"):
            raise ValueError(f"data.regime must be stream or segment; got {regime!r}")
        if lambdas is not None and lambdas.scope != "domain" and regime != "segment":
            raise ValueError(
                f"data.lambdas.scope={lambdas.scope} gives each segment or batch its own λ and needs "
                "data.regime=segment; use data.lambdas.scope=domain with the stream regime"
            )
        if not 0 < fraction <= 1:
            raise ValueError(f"data.fraction must be in (0, 1]; got {fraction}")
        if vocab.normalize("a" + separator + "a") != "a" + separator + "a":
            raise ValueError(f"data.separator {separator!r} is not kept by the vocab's normalisation")
        self.corpus, self.vocab = corpus, vocab
        self.batch_size, self.seq_len = batch_size, seq_len
        self.eval_batch_size = eval_batch_size or batch_size
        self.regime, self.separator = regime, separator
        self.fraction, self.fraction_seed, self.max_chars = fraction, fraction_seed, max_chars
        self.lambdas, self.cache_dir = lambdas, cache_dir
        self._counts: dict[str, SplitCounts] = {}
        self._clusters: tuple[Tensor, Tensor, Tensor] | None = None
        self._groups: dict[str, Tensor] = {}
        self.segments: dict[str, SplitIds] | None = None

    # ------------------------------------------------------------------ preparing
    def setup(self, stage: str | None = None) -> None:
        if self.segments is not None:
            return
        encoded = encode_corpus(self.corpus, self.vocab, self.separator, self.cache_dir)
        for split in SPLITS:
            if not encoded.raw_segments[split]:
                raise CorpusError(
                    f"the {split} split of corpus {self.corpus.name!r} is empty: the corpus gives train/dev/test "
                    f"{'/'.join(str(encoded.raw_segments[s]) for s in SPLITS)} segments, "
                    f"{'/'.join(str(encoded.raw_chars[s]) for s in SPLITS)} characters. Give the {split} split "
                    "a share of the text (data=text: data.corpus.dev and data.corpus.test) or use a corpus with "
                    "more text."
                )
        self._report_outside(encoded.outside, sum(encoded.raw_chars.values()))
        segments = {}
        for split in SPLITS:
            kept = encoded.splits[split]
            if split == "train" and self.fraction < 1:
                kept = kept.take(self._subset(len(kept)), self.vocab.encode(self.separator).numpy())
            if self.max_chars is not None:
                kept = kept.head(_first_chars(kept.lengths, self.max_chars))
            if not len(kept):
                raise CorpusError(
                    f"the {split} split of corpus {self.corpus.name!r} has no text after normalisation; "
                    "check the corpus files and the vocab settings"
                )
            segments[split] = kept
        self.segments = segments
        log.info(
            "corpus %s: %s segments, %s symbols (train/dev/test)",
            self.corpus.name,
            "/".join(str(len(segments[s])) for s in SPLITS),
            "/".join(str(segments[s].symbols()) for s in SPLITS),
        )

    def _report_outside(self, outside: Counter[str], total: int) -> None:
        """Log the ``outside`` characters of the ``total`` that the vocab leaves out (``vocab.oov``):
        a warning when they are more than ``OUTSIDE_WARN`` of the text, else an info line."""
        n = sum(outside.values())
        if not n:
            return
        fate = {"drop": "dropped", "space": "turned into spaces", "unk": f"turned into {self.vocab.unk_symbol!r}"}
        message = (
            f"corpus {self.corpus.name!r}: {n} of {total} characters ({n / total:.1%}) are outside the symbol "
            f"set and {fate[self.vocab.oov]} (vocab.oov={self.vocab.oov}); most common: "
            + ", ".join(f"{c!r} {k}" for c, k in outside.most_common(10))
        )
        if n > OUTSIDE_WARN * total:
            log.warning(
                "%s. Keep them as symbols with vocab.extra_symbols, or use a vocab whose symbols cover this text",
                message,
            )
        else:
            log.info(message)

    def _subset(self, n_segments: int) -> np.ndarray:
        """``[k]`` the training segments kept by ``fraction`` (ascending)."""
        n = max(1, round(n_segments * self.fraction))
        return np.sort(np.random.default_rng(self.fraction_seed).choice(n_segments, n, replace=False))

    def ids(self, split: str) -> torch.Tensor:
        """All symbols of a split as one stream ``[N]`` uint8 (segments joined by the separator; a view
        of the memory-mapped cache)."""
        self.setup()
        return torch.from_numpy(self.segments[split].ids)  # type: ignore[index]

    def dataset(self, split: str, batch_size: int | None = None) -> Dataset:
        """The batches of a split in this module's regime, for this process's rank."""
        self.setup()
        bs = batch_size or (self.batch_size if split == "train" else self.eval_batch_size)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        equal_share = split == "train"  # DDP steps every rank together
        if self.regime == "stream":
            base: Dataset = StreamBatches(self.ids(split), bs, self.seq_len, rank, world)
        elif self.lambdas is not None and self.lambdas.scope == "cluster":  # one group per batch
            segs, group = self.segments[split], self.lambda_groups(split)  # type: ignore[index]
            members = [torch.nonzero(group == g).squeeze(1).tolist() for g in range(int(group.max()) + 1)]
            base = ConcatDataset([SegmentBatches(segs, bs, rank, world, m, equal_share) for m in members if m])
        else:
            base = SegmentBatches(self.segments[split], bs, rank, world, equal_share=equal_share)  # type: ignore[index]
        if self.lambdas is None:
            return base
        domain = self.lambda_counts("train").total() if self.lambdas.scope == "domain" else None
        return LambdaBatches(base, self.lambda_counts(split), self.lambdas.scope, domain)

    # ------------------------------------------------------------- factorized LM λ
    def lambda_counts(self, split: str) -> SplitCounts:
        """The split's statistics for λ (:class:`~memsig.data.lambdas.SplitCounts`; needs ``lambdas``)."""
        if self.lambdas is None:
            raise ValueError("this data config has no lambdas: add data/lambdas=bigram (the factorized LM needs λ)")
        if split not in self._counts:
            self.setup()
            self._counts[split] = self.lambdas.count(self.segments[split], len(self.vocab))  # type: ignore[index]
        return self._counts[split]

    def lambda_moments(self) -> tuple[Tensor, Tensor]:
        """``([K], [K])`` mean and standard deviation of the training segments' frequencies."""
        return moments(self.lambda_counts("train"))

    def lambda_groups(self, split: str) -> Tensor:
        """``[N]`` the k-means group of each segment of the split (centres fitted on train)."""
        if self._clusters is None:
            self._clusters = self.lambdas.kmeans(self.lambda_counts("train"))  # type: ignore[union-attr]
        if split not in self._groups:
            self._groups[split] = self.lambdas.assign(self.lambda_counts(split), *self._clusters)  # type: ignore[union-attr]
        return self._groups[split]

    def train_dataloader(self) -> DataLoader:
        return self.resumable_loader(self.dataset("train"), shuffle=self.regime == "segment")

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("dev"), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=None)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _first_chars(lengths: np.ndarray, max_chars: int) -> int:
    """How many of the segments of ``lengths`` ``[n]`` are kept by ``max_chars``: segments are added
    while fewer than ``max_chars`` symbols (each counted with one separator) came before."""
    before = np.cumsum(lengths + 1) - lengths - 1
    return int(np.searchsorted(before, max_chars, side="left"))
