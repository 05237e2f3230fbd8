"""Text corpora as train/dev/test lists of segments.

A *segment* is one unit of text of the corpus' own (a line of a play, a sentence of the
WSJ). Corpora return raw segments; the :class:`~memsig.vocab.Vocab` normalises them.
Every corpus here is deterministic: the same files and settings give the same splits.

=====================  ==============================================================
``TextCorpus``          any plain-text file or folder; one segment per non-blank line
``ShakespeareWorks``    the complete works (okfn Gutenberg archive), one segment per line
``PTBCorpus``           Penn Treebank LM text (Mikolov's split), official splits
``WSJCorpus``           the LDC WSJ layout (SI-284 / dev93 / eval92), see ``wsj.py``
=====================  ==============================================================
"""

from __future__ import annotations

import logging
import re
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from memsig.data.io import CorpusError, ensure_file, file_hashes, iter_lines

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")
SHARE_TOLERANCE = 0.5  # relative; a segment split further from the shares is redone by characters
CHAR_BLOCKS = 100  # blocks of the ``blocks`` method when it splits by characters


@dataclass(frozen=True)
class Splits:
    """Raw text segments of each split, in corpus order."""

    train: list[str]
    dev: list[str]
    test: list[str]

    def __getitem__(self, split: str) -> list[str]:
        if split not in ("train", "dev", "test"):
            raise KeyError(f"unknown split {split!r}; expected train, dev or test")
        return getattr(self, split)


class Corpus(ABC):
    """A source of segmented text with its train/dev/test split.

    A corpus gives its splits whole (:meth:`load`) or as a stream of segments (:meth:`stream`),
    which is how :mod:`memsig.data.symbols` encodes a corpus larger than memory. Corpora read
    from files name them in :meth:`cache_key`, so their encoded symbols are cached on disk.
    """

    name: str = "corpus"

    @abstractmethod
    def load(self) -> Splits:
        """Read the corpus and return its splits."""

    def stream(self) -> Iterator[tuple[int, str]]:
        """``(split, segment)`` for every raw segment (split 0 train, 1 dev, 2 test), each split's
        in corpus order. This default reads :meth:`load`; corpora read from files stream them."""
        splits = self.load()
        for i, split in enumerate(SPLITS):
            for segment in splits[split]:
                yield i, segment

    def cache_key(self) -> dict[str, Any] | None:
        """Everything the segments depend on (the files' sha256 and the settings), or None when
        the corpus is not read from files (its symbols are then encoded in memory, not cached)."""
        return None


def collect(stream: Iterable[tuple[int, str]]) -> Splits:
    """The :class:`Splits` of a :meth:`Corpus.stream`."""
    out: list[list[str]] = [[], [], []]
    for split, segment in stream:
        out[split].append(segment)
    return Splits(*out)


def lines_of(text: str) -> list[str]:
    """Non-blank lines of a text, stripped."""
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def split_segments(
    segments: list[str],
    dev: float = 0.05,
    test: float = 0.05,
    method: Literal["tail", "blocks"] = "tail",
    block: int = 100,
    seed: int = 0,
) -> Splits:
    """Split segments deterministically into train/dev/test (see :func:`plan_split`)."""
    lengths = np.fromiter(map(len, segments), dtype=np.int64, count=len(segments))
    return collect(plan_split(lengths, dev, test, method, block, seed).apply(segments))


@dataclass(frozen=True)
class SplitPlan:
    """Where every segment of a corpus goes, decided from the segments' lengths alone.

    Attributes:
        owners: ``[n]`` int8 the split of each segment (0 train, 1 dev, 2 test), or None when
            the text is split by characters.
        runs: with ``owners`` None, ``(end, split)``: the characters of the concatenated segments
            before ``end`` (and after the previous run's) go to ``split``.
    """

    owners: np.ndarray | None
    runs: list[tuple[int, int]]

    def apply(self, segments: Iterable[str]) -> Iterator[tuple[int, str]]:
        """``(split, segment)`` of the (raw) ``segments`` the plan was made for, in order. Split by
        characters, a segment is divided where its characters change split; the pieces are
        stripped, and empty ones dropped."""
        if self.owners is not None:
            yield from zip(self.owners.tolist(), segments)
            return
        r, offset = 0, 0  # the current run; characters before the current segment
        for seg in segments:
            start = 0
            while start < len(seg):
                end, owner = self.runs[r]
                stop = min(len(seg), end - offset)
                if piece := seg[start:stop].strip():
                    yield owner, piece
                start = stop
                if offset + stop == end and r + 1 < len(self.runs):
                    r += 1
            offset += len(seg)


def plan_split(
    lengths: np.ndarray,
    dev: float = 0.05,
    test: float = 0.05,
    method: Literal["tail", "blocks"] = "tail",
    block: int = 100,
    seed: int = 0,
) -> SplitPlan:
    """The deterministic train/dev/test split of segments of ``lengths`` ``[n]`` characters.

    ``tail``: train is the first ``1 - dev - test`` share, then dev, then test (the usual
    split of continuous text such as tiny-shakespeare). ``blocks``: consecutive runs of
    ``block`` segments are assigned to the splits by a seeded shuffle, so each split
    samples the whole corpus while text stays continuous inside a block. Order within
    each split is the corpus order.

    Segments are the unit while they are many and short enough for every split to get its
    share of the characters to within ``SHARE_TOLERANCE`` (relative). Otherwise (a few lines,
    or a few hundred long ones) the text is split by characters: ``tail`` cuts it at the
    shares, ``blocks`` shuffles ``CHAR_BLOCKS`` runs of equally many characters; a segment
    that spans a cut is divided there.
    """
    if not 0 <= dev < 1 or not 0 <= test < 1 or dev + test >= 1:
        raise ValueError(f"dev ({dev}) and test ({test}) shares must be in [0, 1) and sum below 1")
    if method not in ("tail", "blocks"):
        raise ValueError(f"unknown split method {method!r}; expected tail or blocks")
    shares = (1 - dev - test, dev, test)
    n = len(lengths)
    if method == "tail":
        n_dev, n_test = round(n * dev), round(n * test)
        owners = np.repeat(np.array([0, 1, 2], dtype=np.int8), [n - n_dev - n_test, n_dev, n_test])
    else:
        owners = np.repeat(_assign_blocks(-(-n // block), dev, test, seed), block)[:n]
    chars = [int(c) for c in np.bincount(owners, weights=lengths, minlength=3)]
    total = sum(chars)
    if all(abs(c - share * total) <= SHARE_TOLERANCE * share * total for c, share in zip(chars, shares)):
        return SplitPlan(owners, [])
    log.info(
        "%d segments give train/dev/test %s of the characters, not %s: splitting by characters",
        n,
        "/".join(f"{c / total:.3f}" for c in chars),
        "/".join(f"{share:.3f}" for share in shares),
    )
    if method == "tail":
        cuts = [0, round(total * shares[0]), round(total * (shares[0] + dev)), total]
        return SplitPlan(None, _runs(cuts, [0, 1, 2]))
    cuts = [round(total * i / CHAR_BLOCKS) for i in range(CHAR_BLOCKS + 1)]
    return SplitPlan(None, _runs(cuts, _assign_blocks(CHAR_BLOCKS, dev, test, seed).tolist()))


def _assign_blocks(n_blocks: int, dev: float, test: float, seed: int) -> np.ndarray:
    """``[n_blocks]`` the split of each block (0 train, 1 dev, 2 test) by a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(n_blocks)
    n_dev, n_test = round(n_blocks * dev), round(n_blocks * test)
    which = np.zeros(n_blocks, dtype=np.int8)
    which[order[:n_dev]] = 1
    which[order[n_dev : n_dev + n_test]] = 2
    return which


def _runs(cuts: list[int], owners: list[int]) -> list[tuple[int, int]]:
    """``(end, owner)`` of characters ``cuts[k]`` to ``cuts[k + 1]`` going to ``owners[k]``, adjacent
    runs of one owner merged and empty ones dropped."""
    runs: list[tuple[int, int]] = []
    for end, owner in zip(cuts[1:], owners):
        if runs and runs[-1][1] == owner:
            runs[-1] = (end, owner)
        elif end > (runs[-1][0] if runs else 0):
            runs.append((end, owner))
    return runs


class TextCorpus(Corpus):
    """Any plain-text file, or every ``*.txt`` file of a folder (sorted), one segment per line.

    Args:
        path: a UTF-8 text file or a folder of them.
        url, sha256: where to fetch ``path`` when it is missing (single file only).
        dev, test, method, block, seed: see :func:`plan_split`.
        pattern: file glob inside a folder.
    """

    def __init__(
        self,
        path: str,
        url: str | None = None,
        sha256: str | None = None,
        dev: float = 0.05,
        test: float = 0.05,
        method: Literal["tail", "blocks"] = "tail",
        block: int = 100,
        seed: int = 0,
        pattern: str = "*.txt",
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.url, self.sha256, self.pattern = url, sha256, pattern
        self.split_args = dict(dev=dev, test=test, method=method, block=block, seed=seed)
        self.name = name or self.path.stem

    def files(self) -> list[Path]:
        if self.path.is_dir():
            found = sorted(self.path.glob(self.pattern))
            if not found:
                raise CorpusError(f"corpus folder {self.path} has no files matching {self.pattern!r}")
            return found
        return [ensure_file(self.path, self.url, self.sha256)]

    def segments(self) -> Iterator[str]:
        """The raw segments (non-blank lines, stripped) of every file in turn, streamed."""
        for f in self.files():
            yield from iter_lines(f)

    def load(self) -> Splits:
        return collect(self.stream())

    def stream(self) -> Iterator[tuple[int, str]]:
        """The segments with their split, reading the files twice (once for the lengths the
        split is decided on) so that the text is never held whole."""
        lengths = np.fromiter(map(len, self.segments()), dtype=np.int64)
        yield from plan_split(lengths, **self.split_args).apply(self.segments())

    def cache_key(self) -> dict[str, Any]:
        return {"corpus": type(self).__name__, "files": file_hashes(self.files()), **self.split_args}


class ShakespeareWorks(TextCorpus):
    """The complete works from the okfn Gutenberg archive (``*_gut.txt`` inside a .tar.gz).

    Files are read in byte order of their names (as ``cat shksprdata/texts/*_gut.txt``)
    and split in blocks of lines so every play contributes to dev and test.
    """

    def __init__(self, path: str, method: Literal["tail", "blocks"] = "blocks", **kwargs) -> None:
        super().__init__(path, method=method, pattern="*_gut.txt", **kwargs)
        self.name = "shakespeare_complete"

    def segments(self) -> Iterator[str]:
        """The raw segments (non-blank lines, stripped) of the works in turn, one work in memory at a time."""
        (archive,) = self.files()
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = sorted(
                    (m for m in tar.getmembers() if m.isfile() and Path(m.name).match(self.pattern)),
                    key=lambda m: m.name.encode(),
                )
                if not members:
                    raise CorpusError(f"archive {archive} has no files matching {self.pattern!r}")
                for m in members:
                    raw = tar.extractfile(m).read()  # type: ignore[union-attr]
                    yield from lines_of(_decode(raw, f"{archive}:{m.name}"))
        except tarfile.TarError as err:
            raise CorpusError(f"archive {archive} cannot be read ({err}); re-obtain it (see data README)") from None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{where} is not valid UTF-8 (byte {err.start})") from None


_PTB_CLITIC = re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)(?= |$)")


def reattach_ptb_clitics(text: str) -> str:
    """Join the treebank's split clitics to their word: ``company 's`` -> ``company's``,
    ``do n't`` -> ``don't``."""
    return _PTB_CLITIC.sub(r"\1", text)


class PTBCorpus(Corpus):
    """Penn Treebank LM text (Mikolov's files ``ptb.{train,valid,test}.txt``), official splits.

    Each line is one sentence (segment). Mapping to characters:

    - ``N`` (the treebank's number token) becomes ``number`` (default ``#``);
    - split clitics are re-attached: ``company 's`` -> ``company's``, ``do n't`` -> ``don't``;
    - ``<unk>`` (the 10k-vocabulary cut) becomes ``unk`` — by default the empty string,
      i.e. the token is dropped, so no symbol stands for words the treebank hid. Set it
      to a character (and add that character to the vocab, e.g. ``vocab.oov=unk``) to keep
      a marker instead.

    Args:
        root: folder with the three files.
        unk, number: replacements for ``<unk>`` and ``N`` (see above).
        urls, sha256: per split (``train``/``dev``/``test``), where to fetch a missing file.
    """

    FILES: ClassVar[dict[str, str]] = {"train": "ptb.train.txt", "dev": "ptb.valid.txt", "test": "ptb.test.txt"}

    def __init__(
        self,
        root: str,
        unk: str = "",
        number: str = "#",
        urls: dict[str, str] | None = None,
        sha256: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.unk, self.number = unk, number
        self.urls, self.sha256 = dict(urls or {}), dict(sha256 or {})
        self.name = "ptb"

    def normalize_line(self, line: str) -> str:
        """One treebank sentence as plain text (see class docstring)."""
        tokens = [self.number if t == "N" else self.unk if t == "<unk>" else t for t in line.split()]
        return reattach_ptb_clitics(" ".join(t for t in tokens if t))

    def files(self) -> list[Path]:
        """The train, dev and test files."""
        return [ensure_file(self.root / f, self.urls.get(s), self.sha256.get(s)) for s, f in self.FILES.items()]

    def load(self) -> Splits:
        return collect(self.stream())

    def stream(self) -> Iterator[tuple[int, str]]:
        for split, path in enumerate(self.files()):
            for line in iter_lines(path):
                if sentence := self.normalize_line(line):
                    yield split, sentence

    def cache_key(self) -> dict[str, Any]:
        return {"corpus": "PTBCorpus", "files": file_hashes(self.files()), "unk": self.unk, "number": self.number}
