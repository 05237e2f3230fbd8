"""The speech DataModule: log-mel features and grapheme targets, bucketed by length.

``setup()`` lists the corpus' utterances, normalises their transcripts with the
:class:`~memsig.vocab.Vocab`, reads every audio file once and keeps its
:class:`~memsig.data.speech.features.LogMel` features in memory (float16). Utterances
with an empty transcript, longer than ``max_seconds`` or with bad audio are skipped and
recorded in :attr:`SpeechDataModule.skipped` (bad audio raises with ``on_bad_audio="error"``).

Every dataloader yields batches (utterances sorted by decreasing frames)::

    features         [B, T, F] float32  log-mel frames, zero padded
    feature_lengths  [B] long           real frames of each utterance
    tokens           [B, L] long        vocab ids of the normalised transcript, padded with 0
    token_lengths    [B] long           real symbols of each transcript
    utt_ids, speakers, texts  list[str] (texts: normalised transcripts)
    carry            False              (no state is carried between batches)

Batches hold utterances of similar length: a split sorted by frames is cut into batches
of at most ``max_batch_size`` utterances whose padded audio (``B x`` the longest) is at
most ``batch_seconds`` (``eval_batch_seconds`` for dev/test); one longer utterance makes
a batch of its own. Training visits the batches in a new order every epoch (seeded by
``seed + epoch``; Lightning calls the sampler's ``set_epoch``) and applies SpecAugment
(when given) as batches are made, so the stored features stay clean; dev and test come
in a fixed order, never augmented. Under DDP (``trainer.use_distributed_sampler=false``)
each rank takes every ``world_size``-th batch, training batches cut to an equal count.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from memsig.data.io import CorpusError
from memsig.data.loader import ResumableTraining
from memsig.data.speech.audio import AudioError, read_audio
from memsig.data.speech.corpora import SPLITS, SpeechCorpus
from memsig.data.speech.features import LogMel, SpecAugment
from memsig.data.speech.manifest import Utterance
from memsig.vocab import Vocab

log = logging.getLogger(__name__)
OnBadAudio = Literal["skip", "error"]
PROGRESS_MIN = 500  # show a progress bar for splits of at least this many utterances


@dataclass(frozen=True, eq=False)
class Example:
    """One utterance ready for batching: ``features`` ``[T, F]`` float16, ``tokens`` ``[L]``."""

    id: str
    speaker: str
    text: str
    features: Tensor
    tokens: Tensor


class SpeechCollate:
    """Examples -> the batch dict (module docstring), SpecAugment on each utterance first when given."""

    def __init__(self, augment: SpecAugment | None = None) -> None:
        self.augment = augment

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        examples = sorted(examples, key=lambda e: -e.features.shape[0])
        feats = [e.features.float() for e in examples]
        if self.augment is not None:
            feats = [self.augment(f) for f in feats]
        return {
            "features": pad_sequence(feats, batch_first=True),
            "feature_lengths": torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
            "tokens": pad_sequence([e.tokens.long() for e in examples], batch_first=True),
            "token_lengths": torch.tensor([len(e.tokens) for e in examples], dtype=torch.long),
            "utt_ids": [e.id for e in examples],
            "speakers": [e.speaker for e in examples],
            "texts": [e.text for e in examples],
            "carry": False,
        }


def length_buckets(frames: list[int], max_frames: int, max_batch_size: int) -> list[list[int]]:
    """Indices sorted by ``frames`` (ties by index), cut into batches of at most ``max_batch_size``
    whose padded size (count x longest) is at most ``max_frames``; shortest batches first."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(frames)), key=lambda i: (frames[i], i)):
        if current and (len(current) == max_batch_size or (len(current) + 1) * frames[i] > max_frames):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


class BucketBatches(Dataset):
    """Length-bucketed batches of one split (see :func:`length_buckets`); item ``i`` is a batch dict.

    Args:
        examples: the split's utterances.
        max_frames, max_batch_size: batch limits (padded frames, utterances).
        collate: turns a batch's examples into the batch dict.
        rank, world_size: this process keeps every ``world_size``-th batch.
        equal_share: first drop the last batches so every rank gets as many (training).
    """

    def __init__(
        self,
        examples: list[Example],
        max_frames: int,
        max_batch_size: int,
        collate: SpeechCollate,
        rank: int = 0,
        world_size: int = 1,
        equal_share: bool = False,
    ) -> None:
        batches = length_buckets([e.features.shape[0] for e in examples], max_frames, max_batch_size)
        if equal_share:
            batches = batches[: len(batches) - len(batches) % world_size]
        self.examples, self.collate = examples, collate
        self.batches = batches[rank::world_size]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.collate([self.examples[j] for j in self.batches[i]])


class _Skip(Exception):
    """An utterance left out of the data: ``kind`` (for the log summary) and ``reason``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class SpeechDataModule(ResumableTraining, L.LightningDataModule):
    """Log-mel features and grapheme targets of a speech corpus (see module docstring).

    Args:
        vocab: symbol set and transcript normalisation.
        corpus: where the utterances come from.
        features: the feature extractor (default: 80 log-mel bins, 25 ms / 10 ms at 16 kHz);
            audio is resampled to its ``sample_rate``.
        spec_augment: masking of training batches; ``None``: none.
        batch_seconds: padded audio per training batch, in seconds.
        max_batch_size: utterances per batch at most.
        eval_batch_seconds: padded audio per dev/test batch.
        max_seconds: longer utterances are skipped; ``None``: keep all.
        on_bad_audio: ``skip`` (log a warning naming the file) or ``error`` (raise its AudioError).
        limit: the first N utterances of a split (e.g. ``{"train": 100}``), for tests and smoke runs.
        num_workers: dataloader worker processes (batches are padded and augmented there).
        seed: the training batch order (``seed + epoch``).
    """

    def __init__(
        self,
        vocab: Vocab,
        corpus: SpeechCorpus,
        features: LogMel | None = None,
        spec_augment: SpecAugment | None = None,
        batch_seconds: float = 240.0,
        max_batch_size: int = 64,
        eval_batch_seconds: float = 480.0,
        max_seconds: float | None = 20.0,
        on_bad_audio: OnBadAudio = "skip",
        limit: dict[str, int] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if on_bad_audio not in ("skip", "error"):
            raise ValueError(f"data.on_bad_audio must be skip or error; got {on_bad_audio!r}")
        if batch_seconds <= 0 or eval_batch_seconds <= 0 or max_batch_size < 1:
            raise ValueError(
                "data.batch_seconds and data.eval_batch_seconds must be positive and data.max_batch_size at least 1; "
                f"got {batch_seconds}, {eval_batch_seconds}, {max_batch_size}"
            )
        self.vocab, self.corpus = vocab, corpus
        self.features = features if features is not None else LogMel()
        self.spec_augment = spec_augment
        self.batch_seconds, self.eval_batch_seconds = batch_seconds, eval_batch_seconds
        self.max_batch_size = max_batch_size
        self.max_seconds, self.on_bad_audio = max_seconds, on_bad_audio
        self.limit = dict(limit or {})
        self.num_workers, self.seed = num_workers, seed
        self.examples: dict[str, list[Example]] | None = None
        self.skipped: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}

    @property
    def feature_dim(self) -> int:
        """``F``: features per frame."""
        return self.features.n_mels

    @property
    def frame_rate(self) -> float:
        """Feature frames per second of audio."""
        return self.features.frame_rate

    # ------------------------------------------------------------------ preparing
    def setup(self, stage: str | None = None) -> None:
        if self.examples is not None:
            return
        self.skipped = {s: [] for s in SPLITS}
        examples = {}
        for split in SPLITS:
            utts = self.corpus.utterances(split)
            if split in self.limit:
                utts = utts[: self.limit[split]]
            examples[split] = self._prepare(split, utts)
        self.examples = examples
        log.info(
            "corpus %s: %s utterances, %s hours (train/dev/test)",
            self.corpus.name,
            "/".join(str(len(examples[s])) for s in SPLITS),
            "/".join(f"{sum(e.features.shape[0] for e in examples[s]) / self.frame_rate / 3600:.2f}" for s in SPLITS),
        )

    @torch.no_grad()
    def _prepare(self, split: str, utts: list[Utterance]) -> list[Example]:
        """Features and ids of a split's utterances; the others recorded in ``skipped``."""
        out: list[Example] = []
        kinds: Counter[str] = Counter()
        bar = tqdm(
            utts,
            desc=f"{self.corpus.name} {split} features",
            unit="utt",
            disable=True if len(utts) < PROGRESS_MIN else None,
        )  # None: only on a terminal
        for u in bar:
            text = self.vocab.normalize(u.text)
            try:
                feats = self._features(u, text)
            except _Skip as skip:
                kinds[skip.kind] += 1
                self.skipped[split].append((u.id, skip.reason))
                if skip.kind == "bad audio":
                    log.warning("skipping utterance %s of %s %s: %s", u.id, self.corpus.name, split, skip.reason)
                continue
            out.append(Example(u.id, u.speaker, text, feats, self.vocab.encode(text)))
        if kinds:
            log.info("%s %s: skipped %s", self.corpus.name, split, ", ".join(f"{n} ({k})" for k, n in kinds.items()))
        if utts and not out:
            raise CorpusError(
                f"every one of the {len(utts)} utterances of the {split} split of corpus {self.corpus.name!r} was "
                f"skipped ({', '.join(f'{n} {k}' for k, n in kinds.items())}); first: {self.skipped[split][0][1]}"
            )
        return out

    def _features(self, u: Utterance, text: str) -> Tensor:
        """``[T, F]`` float16 features of an utterance with normalised transcript ``text``.

        Raises:
            _Skip: the utterance cannot be used (and ``on_bad_audio`` is ``skip`` for bad audio).
            AudioError: bad audio with ``on_bad_audio="error"``.
        """
        if not text:
            raise _Skip("empty transcript", f"transcript {u.text!r} is empty after normalisation")
        try:
            wave = read_audio(u.audio, self.features.sample_rate)
        except AudioError as err:
            if self.on_bad_audio == "error":
                raise
            raise _Skip("bad audio", str(err)) from None
        seconds = len(wave) / self.features.sample_rate
        if self.max_seconds is not None and seconds > self.max_seconds:
            limit = f"max_seconds={self.max_seconds:g}"
            raise _Skip(f"longer than {limit}", f"{seconds:.1f} s is longer than data.{limit}")
        return self.features(wave).half()

    def ids(self, split: str) -> Tensor:
        """All normalised transcripts of a split joined by a space, as ids ``[N]`` (empty for an empty split)."""
        self.setup()
        return self.vocab.encode(" ".join(e.text for e in self.examples[split]))  # type: ignore[index]

    # ---------------------------------------------------------------- dataloaders
    def dataset(self, split: str) -> BucketBatches:
        """The batches of a split in a fixed order, never augmented (what probes read)."""
        return self._batches(split, train=False)

    def _batches(self, split: str, train: bool) -> BucketBatches:
        self.setup()
        examples = self.examples[split]  # type: ignore[index]
        if not examples:
            raise CorpusError(
                f"the {split} split of corpus {self.corpus.name!r} has no utterances "
                f"({len(self.skipped[split])} skipped, see data.skipped); use a corpus with a {split} split "
                "(LibriVox is test-only) or raise data.limit / data.max_seconds"
            )
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        seconds = self.batch_seconds if train else self.eval_batch_seconds
        return BucketBatches(
            examples,
            int(seconds * self.frame_rate),
            self.max_batch_size,
            SpeechCollate(self.spec_augment if train else None),
            rank,
            world,
            equal_share=train,
        )

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self._batches(split, train=False),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled per epoch by ``seed``; resumable mid-epoch (:class:`~memsig.data.loader.ResumableTraining`)."""
        return self.resumable_loader(
            self._batches("train", train=True),
            shuffle=True,
            seed=self.seed,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
