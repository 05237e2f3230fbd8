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
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from memsig.data.corpora import Corpus, Splits
from memsig.data.io import CorpusError
from memsig.vocab import Vocab

log = logging.getLogger(__name__)
Regime = Literal["stream", "segment"]
SPLITS = ("train", "dev", "test")


class StreamBatches(Dataset):
    """Consecutive ``[B, T]`` windows over ``B`` parallel streams of one id sequence.

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
                f"a split of {len(ids)} symbols is too short for {rows} streams; "
                "lower data.batch_size or use more text"
            )
        streams = ids[: length * rows].view(rows, length)
        self.streams = streams[rank * batch_size : (rank + 1) * batch_size].long()
        self.seq_len = seq_len
        self.n_windows = math.ceil((length - 1) / seq_len)

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = i * self.seq_len
        stop = min(start + self.seq_len, self.streams.shape[1] - 1)
        inputs = self.streams[:, start:stop]
        b, t = inputs.shape
        return {
            "inputs": inputs,
            "targets": self.streams[:, start + 1 : stop + 1],
            "mask": torch.ones(b, t, dtype=torch.bool),
            "history": torch.arange(start, stop).expand(b, t),
            "carry": i > 0,
        }


class SegmentBatches(Dataset):
    """Length-bucketed batches of whole segments, padded; the state resets per segment.

    Args:
        segments: id tensors ``[n_i]`` (segments shorter than 2 symbols are skipped).
        batch_size: segments per batch.
        rank, world_size: this process keeps every ``world_size``-th batch.
    """

    def __init__(self, segments: list[torch.Tensor], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        segs = [s.long() for s in segments if len(s) >= 2]
        order = sorted(range(len(segs)), key=lambda i: (len(segs[i]), i))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.segs = segs
        self.batches = batches[rank::world_size]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        chosen = [self.segs[j] for j in self.batches[i]]
        t = max(len(s) for s in chosen) - 1
        inputs = torch.zeros(len(chosen), t, dtype=torch.long)
        targets = torch.zeros_like(inputs)
        mask = torch.zeros(len(chosen), t, dtype=torch.bool)
        for r, s in enumerate(chosen):
            inputs[r, : len(s) - 1] = s[:-1]
            targets[r, : len(s) - 1] = s[1:]
            mask[r, : len(s) - 1] = True
        history = torch.arange(t).expand(len(chosen), t)
        return {"inputs": inputs, "targets": targets, "mask": mask, "history": history, "carry": False}


def unigram_entropy(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy in nats of the symbol frequencies of ``ids`` ``[N]`` (the unigram baseline)."""
    counts = torch.bincount(ids.long().flatten(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


class TextDataModule(L.LightningDataModule):
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
    ) -> None:
        super().__init__()
        if regime not in ("stream", "segment"):
            raise ValueError(f"data.regime must be stream or segment; got {regime!r}")
        if not 0 < fraction <= 1:
            raise ValueError(f"data.fraction must be in (0, 1]; got {fraction}")
        if vocab.normalize("a" + separator + "a") != "a" + separator + "a":
            raise ValueError(f"data.separator {separator!r} is not kept by the vocab's normalisation")
        self.corpus, self.vocab = corpus, vocab
        self.batch_size, self.seq_len = batch_size, seq_len
        self.eval_batch_size = eval_batch_size or batch_size
        self.regime, self.separator = regime, separator
        self.fraction, self.fraction_seed, self.max_chars = fraction, fraction_seed, max_chars
        self.segments: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------ preparing
    def setup(self, stage: str | None = None) -> None:
        if self.segments is not None:
            return
        splits: Splits = self.corpus.load()
        segments = {}
        for split in SPLITS:
            normed = [s for s in (self.vocab.normalize(x) for x in splits[split]) if s]
            if split == "train" and self.fraction < 1:
                normed = self._subset(normed)
            if self.max_chars is not None:
                normed = _first_chars(normed, self.max_chars)
            if not normed:
                raise CorpusError(
                    f"the {split} split of corpus {self.corpus.name!r} has no text after normalisation; "
                    "check the corpus files and the vocab settings"
                )
            segments[split] = normed
        self.segments = segments
        log.info(
            "corpus %s: %s segments, %s symbols (train/dev/test)",
            self.corpus.name,
            "/".join(str(len(segments[s])) for s in SPLITS),
            "/".join(str(sum(map(len, segments[s]))) for s in SPLITS),
        )

    def _subset(self, segments: list[str]) -> list[str]:
        n = max(1, round(len(segments) * self.fraction))
        keep = np.sort(np.random.default_rng(self.fraction_seed).choice(len(segments), n, replace=False))
        return [segments[i] for i in keep]

    def ids(self, split: str) -> torch.Tensor:
        """All symbols of a split as one stream ``[N]`` (segments joined by the separator)."""
        self.setup()
        return self.vocab.encode(self.separator.join(self.segments[split]))  # type: ignore[index]

    def dataset(self, split: str, batch_size: int | None = None) -> Dataset:
        """The batches of a split in this module's regime, for this process's rank."""
        self.setup()
        bs = batch_size or (self.batch_size if split == "train" else self.eval_batch_size)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.regime == "stream":
            return StreamBatches(self.ids(split), bs, self.seq_len, rank, world)
        segs = [self.vocab.encode(s) for s in self.segments[split]]  # type: ignore[index]
        return SegmentBatches(segs, bs, rank, world)

    def _loader(self, split: str) -> DataLoader:
        shuffle = split == "train" and self.regime == "segment"
        return DataLoader(self.dataset(split), batch_size=None, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _first_chars(segments: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for s in segments:
        if total >= max_chars:
            break
        out.append(s)
        total += len(s) + 1
    return out
