"""The encoded corpus: the same ids, segments, splits and streams as the text, cached once, never half-written."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from memsig.data import symbols
from memsig.data.corpora import SPLITS, PTBCorpus, TextCorpus, lines_of, split_segments
from memsig.data.io import read_text
from memsig.data.text import StreamBatches, TextDataModule
from memsig.resolvers import data_dir
from memsig.vocab import Vocab

VOCAB = Vocab()


def tiny_slice(tmp_path: Path, lines: int = 4000) -> Path:
    """The first ``lines`` lines of tiny-shakespeare, as a file of its own."""
    text = (data_dir() / "shakespeare" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(text.splitlines()[:lines]) + "\n", encoding="utf-8")
    return path


def ptb_slice(tmp_path: Path, lines: int = 1500) -> Path:
    """The first ``lines`` sentences of each PTB file, as a treebank folder of its own."""
    root = tmp_path / "ptb"
    root.mkdir()
    for name in PTBCorpus.FILES.values():
        text = (data_dir() / "ptb" / name).read_text(encoding="utf-8")
        (root / name).write_text("\n".join(text.splitlines()[:lines]) + "\n", encoding="utf-8")
    return root


def string_splits(corpus: TextCorpus | PTBCorpus) -> dict[str, list[str]]:
    """The normalised segments of each split, computed from strings held whole (the reference)."""
    if isinstance(corpus, PTBCorpus):
        raw = {
            s: [corpus.normalize_line(x) for x in lines_of(read_text(corpus.root / f))] for s, f in corpus.FILES.items()
        }
    else:
        splits = split_segments(lines_of(read_text(corpus.path)), **corpus.split_args)
        raw = {s: splits[s] for s in SPLITS}
    return {s: [n for n in map(VOCAB.normalize, raw[s]) if n] for s in SPLITS}


@pytest.mark.parametrize("which", ["tinyshakespeare blocks", "ptb"])
def test_the_cached_ids_segments_splits_and_streams_are_those_of_the_text(tmp_path: Path, which: str):
    if which == "ptb":
        corpus: TextCorpus | PTBCorpus = PTBCorpus(str(ptb_slice(tmp_path)))
    else:
        corpus = TextCorpus(str(tiny_slice(tmp_path)), method="blocks", block=50)
    expected = string_splits(corpus)
    dm = TextDataModule(corpus, VOCAB, batch_size=4, seq_len=32, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    for split in SPLITS:
        text_ids = VOCAB.encode(" ".join(expected[split]))
        assert isinstance(dm.segments[split].ids, np.memmap)
        assert torch.equal(dm.ids(split), text_ids), split
        assert [VOCAB.decode(s) for s in dm.segments[split]] == expected[split]
        batches, reference = dm.dataset(split), StreamBatches(text_ids, 4, 32)
        assert len(batches) == len(reference)
        for i in (0, 1, len(batches) - 1):
            assert all(torch.equal(batches[i][k], reference[i][k]) for k in ("inputs", "targets", "history"))


def test_the_cache_is_reused_and_rebuilt_when_the_file_or_the_vocab_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path, cache = tiny_slice(tmp_path, 500), tmp_path / "cache"
    writes: list[Path] = []
    write = symbols._write
    monkeypatch.setattr(symbols, "_write", lambda *args: (writes.append(args[-1]), write(*args))[1])

    def ids(vocab: Vocab = VOCAB) -> torch.Tensor:
        dm = TextDataModule(TextCorpus(str(path)), vocab, batch_size=2, cache_dir=str(cache))
        return dm.ids("train")

    first = ids()
    assert torch.equal(ids(), first) and len(writes) == 1  # the second setup maps the first one's arrays
    ids(Vocab(extra_symbols="!?"))
    assert len(writes) == 2  # another normalisation, another cache
    with path.open("a", encoding="utf-8") as f:
        f.write("a line added at the end\n")
    ids()
    assert len(writes) == 3
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 3 and not list(cache.glob(".*"))


class Interrupted(TextCorpus):
    """A text corpus whose stream stops with an error after ``after`` segments."""

    def __init__(self, path: str, after: int) -> None:
        super().__init__(path)
        self.after = after

    def stream(self) -> Iterator[tuple[int, str]]:
        for i, item in enumerate(super().stream()):
            if i == self.after:
                raise KeyboardInterrupt
            yield item


def test_an_interrupted_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path, cache = tiny_slice(tmp_path, 2000), tmp_path / "cache"
    monkeypatch.setattr(symbols, "CHUNK_CHARS", 1000)  # so that part of the text is written before the stop
    with pytest.raises(KeyboardInterrupt):
        TextDataModule(Interrupted(str(path), after=1500), VOCAB, cache_dir=str(cache)).setup()
    assert list(cache.iterdir()) == []
    dm = TextDataModule(TextCorpus(str(path)), VOCAB, batch_size=2, cache_dir=str(cache))
    assert torch.equal(dm.ids("test"), VOCAB.encode(" ".join(string_splits(dm.corpus)["test"])))


def peak_bytes(path: Path, cache: Path) -> int:
    """Peak Python and numpy allocations while the corpus in ``path`` is encoded and its first batch read."""
    tracemalloc.start()
    dm = TextDataModule(TextCorpus(str(path)), VOCAB, batch_size=8, seq_len=64, cache_dir=str(cache))
    dm.dataset("train")[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(symbols, "CHUNK_CHARS", 1 << 16)
    text = tiny_slice(tmp_path).read_text(encoding="utf-8")
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(text * 4, encoding="utf-8")
    large.write_text(text * 16, encoding="utf-8")
    peak_bytes(small, tmp_path / "warm-up")  # one-time allocations (imports, compiled patterns)
    peaks = [peak_bytes(p, tmp_path / "cache") for p in (small, large)]
    added = 12 * len(text.splitlines())
    # only the per-line lengths the split is planned on grow (8 bytes a line, up to 2.5 times that
    # while numpy grows the array); the text held as strings would add its characters and some
    # 50 bytes a line
    assert peaks[1] - peaks[0] < 24 * added, (peaks, added)
