"""A corpus normalised and encoded once into arrays of symbol ids, memory-mapped from a disk cache.

:func:`encode_corpus` streams a corpus's segments (:meth:`~memsig.data.corpora.Corpus.stream`)
through the vocab's normalisation in chunks and writes each split as one stream of uint8 symbol
ids: its non-empty normalised segments joined by the separator, as the stream regime reads it.
Segments are offsets into that stream, so neither the text nor the ids are ever held whole.

A corpus read from files is cached in ``<cache_dir>/<corpus name>-<key>``, the key a hash of
the files' sha256, the corpus settings, the vocab and the separator: a changed file or
setting is a new folder, and a second run maps the arrays it wrote instead of encoding again.
The folder is filled under a temporary name and renamed when complete
(:func:`~memsig.data.io.atomic_dir`), so an interrupted build leaves no cache behind. Per
split ``s`` it holds:

    s.ids       uint8 [N]  the split's symbol ids, segments joined by the separator
    s.starts    int64 [n]  where each segment starts in ``s.ids``
    s.lengths   int64 [n]  its length
    meta.json   the split sizes, the raw segments and characters per split (before
                normalisation) and the characters outside the symbol set

A corpus not read from files (a list in memory) is encoded the same way into a temporary
folder and loaded into memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from memsig.data.corpora import SPLITS, Corpus
from memsig.data.io import atomic_dir
from memsig.vocab import Vocab

log = logging.getLogger(__name__)
FORMAT = 1  # of the cache folder; part of its key
CHUNK_CHARS = 1 << 22  # raw characters gathered before they are normalised and written
MAX_SYMBOLS = 256  # ids are uint8


@dataclass(frozen=True)
class SplitIds:
    """A split's symbol ids as one stream and its segments as offsets into it.

    Attributes:
        ids: ``[N]`` uint8 the split's ids, segments joined by the separator (memory-mapped
            when cached).
        starts: ``[n]`` int64 where each segment starts in ``ids``.
        lengths: ``[n]`` int64 each segment's length.
    """

    ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> Tensor:
        """``[n_i]`` uint8 the ids of segment ``i``."""
        start = int(self.starts[i])
        return torch.from_numpy(self.ids[start : start + int(self.lengths[i])])

    @classmethod
    def of(cls, segments: Sequence[Tensor]) -> SplitIds:
        """The :class:`SplitIds` of id tensors ``[n_i]`` (concatenated, no separator)."""
        lengths = np.array([len(s) for s in segments], dtype=np.int64)
        ids = torch.cat([s.to(torch.uint8) for s in segments]).numpy() if segments else np.zeros(0, np.uint8)
        return cls(ids, np.cumsum(lengths) - lengths, lengths)

    def symbols(self) -> int:
        """Symbols in the segments (separators not counted)."""
        return int(self.lengths.sum())

    def head(self, n: int) -> SplitIds:
        """The first ``n`` segments (a view of the same stream, cut after segment ``n - 1``)."""
        end = int(self.starts[n - 1] + self.lengths[n - 1]) if n else 0
        return SplitIds(self.ids[:end], self.starts[:n], self.lengths[:n])

    def take(self, index: np.ndarray, separator: np.ndarray) -> SplitIds:
        """The segments ``index`` ``[k]`` (ascending) joined by ``separator`` ``[L]`` uint8, in memory."""
        lengths = self.lengths[index]
        starts = np.cumsum(lengths + len(separator)) - lengths - len(separator)
        ids = np.empty(int(lengths.sum()) + len(separator) * max(len(index) - 1, 0), dtype=np.uint8)
        for k, (src, dst, n) in enumerate(zip(self.starts[index].tolist(), starts.tolist(), lengths.tolist())):
            if k:
                ids[dst - len(separator) : dst] = separator
            ids[dst : dst + n] = self.ids[src : src + n]
        return SplitIds(ids, starts, lengths)


@dataclass(frozen=True)
class EncodedCorpus:
    """A corpus's splits as :class:`SplitIds`, with what its raw text held.

    Attributes:
        splits: ``{split: SplitIds}``.
        raw_segments, raw_chars: ``{split: count}`` before normalisation.
        outside: the raw characters outside the symbol set (``Vocab.outside``) and their counts.
    """

    splits: dict[str, SplitIds]
    raw_segments: dict[str, int]
    raw_chars: dict[str, int]
    outside: Counter[str]


def encode_corpus(
    corpus: Corpus, vocab: Vocab, separator: str = " ", cache_dir: str | Path | None = None
) -> EncodedCorpus:
    """The corpus normalised and encoded, from (or into) its cache folder under ``cache_dir``.

    ``cache_dir`` None, or a corpus without a :meth:`~memsig.data.corpora.Corpus.cache_key`, encodes
    it in memory. ``separator`` must normalise to itself.
    """
    if len(vocab) > MAX_SYMBOLS:
        raise ValueError(
            f"the vocab has {len(vocab)} symbols, but text is encoded as uint8 ids (at most {MAX_SYMBOLS}); "
            "keep fewer symbols (vocab.symbols, vocab.extra_symbols)"
        )
    key = corpus.cache_key()
    if cache_dir is None or key is None:
        with tempfile.TemporaryDirectory() as tmp:
            _write(corpus, vocab, separator, Path(tmp))
            return _read(Path(tmp), mmap=False)
    blob = json.dumps(
        {"format": FORMAT, "corpus": key, "vocab": vocab.to_dict(), "separator": separator}, sort_keys=True
    )
    name = re.sub(r"[^\w.-]", "_", corpus.name)
    folder = Path(cache_dir) / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    if not folder.is_dir():
        log.info("encoding corpus %s into %s", corpus.name, folder)
        t0 = time.perf_counter()
        with atomic_dir(folder) as tmp:
            _write(corpus, vocab, separator, tmp)
        log.info("encoded corpus %s in %.1f s", corpus.name, time.perf_counter() - t0)
    encoded = _read(folder, mmap=True)
    size = sum(f.stat().st_size for f in folder.iterdir())
    log.info(
        "symbol cache %s: %.1f MB, %s ids (train/dev/test, separators included, memory-mapped)",
        folder,
        size / 1e6,
        "/".join(str(len(encoded.splits[s].ids)) for s in SPLITS),
    )
    return encoded


class _SplitWriter:
    """Appends normalised segments of one split to its three files (see module docstring)."""

    def __init__(self, stem: Path, table: dict[int, int], separator: str) -> None:
        self.files: dict[str, BinaryIO] = {k: open(f"{stem}.{k}", "wb") for k in ("ids", "starts", "lengths")}  # noqa: SIM115
        self.table, self.separator = table, separator
        self.size = self.count = 0

    def add(self, segments: list[str]) -> None:
        if not segments:
            return
        gap = len(self.separator)
        lengths = np.fromiter(map(len, segments), dtype=np.int64, count=len(segments))
        lead = gap if self.count else 0
        starts = self.size + lead + np.cumsum(lengths + gap) - lengths - gap
        text = (self.separator if self.count else "") + self.separator.join(segments)
        data = text.translate(self.table).encode("latin-1")
        self.files["ids"].write(data)
        self.files["starts"].write(starts.tobytes())
        self.files["lengths"].write(lengths.tobytes())
        self.size += len(data)
        self.count += len(segments)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _write(corpus: Corpus, vocab: Vocab, separator: str, folder: Path) -> None:
    """Encode ``corpus`` into ``folder`` (see module docstring), ``CHUNK_CHARS`` raw characters at a time."""
    table = {ord(c): i for i, c in enumerate(vocab.alphabet)}
    writers = [_SplitWriter(folder / split, table, separator) for split in SPLITS]
    raw_segments, raw_chars = [0, 0, 0], [0, 0, 0]
    outside: Counter[str] = Counter()
    pending: list[list[str]] = [[], [], []]
    pending_chars = 0

    def flush() -> None:
        for split, segments in enumerate(pending):
            outside.update(vocab.outside("".join(segments)))
            writers[split].add([s for s in map(vocab.normalize, segments) if s])
            segments.clear()

    try:
        for split, segment in corpus.stream():
            pending[split].append(segment)
            raw_segments[split] += 1
            raw_chars[split] += len(segment)
            pending_chars += len(segment)
            if pending_chars >= CHUNK_CHARS:
                flush()
                pending_chars = 0
        flush()
    finally:
        for w in writers:
            w.close()
    meta = {
        "format": FORMAT,
        "corpus": corpus.name,
        "splits": {
            s: {"symbols": w.size, "segments": w.count, "raw_segments": raw_segments[i], "raw_chars": raw_chars[i]}
            for i, (s, w) in enumerate(zip(SPLITS, writers))
        },
        "outside": dict(outside),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


def _array(path: Path, dtype: Any, mmap: bool) -> np.ndarray:
    """The raw array in ``path``: memory-mapped copy-on-write (writable, the file never changes) or read."""
    if not mmap or path.stat().st_size == 0:  # an empty file cannot be mapped
        return np.fromfile(path, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="c")


def _read(folder: Path, mmap: bool) -> EncodedCorpus:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    splits = {
        s: SplitIds(
            *(
                _array(folder / f"{s}.{k}", t, mmap)
                for k, t in (("ids", np.uint8), ("starts", np.int64), ("lengths", np.int64))
            )
        )
        for s in SPLITS
    }
    return EncodedCorpus(
        splits,
        {s: meta["splits"][s]["raw_segments"] for s in SPLITS},
        {s: meta["splits"][s]["raw_chars"] for s in SPLITS},
        Counter(meta["outside"]),
    )
