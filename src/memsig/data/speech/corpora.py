"""Speech corpora as train/dev/test lists of :class:`~memsig.data.speech.manifest.Utterance`.

Corpora list utterances (audio path, raw transcript, speaker, duration); the
:class:`~memsig.data.speech.datamodule.SpeechDataModule` reads the audio and normalises
the transcripts. A split may be empty (LibriVox is test-only). Every listing is
deterministic: the same files and settings give the same splits in the same order.

=======================  ============================================================
``ManifestCorpus``        any corpus described by JSONL/TSV manifests, one per split
``EspeakCorpus``          PTB sentences spoken by espeak-ng voices, built once (cached)
``FSDDCorpus``            Free Spoken Digit Dataset (8 kHz digits, 6 speakers)
``LibriVoxCorpus``        pocketsphinx's 5 LibriVox test clips (smoke tests)
``LibriSpeechCorpus``     LibriSpeech subsets (openslr.org/12 layout)
``WSJSpeechCorpus``       the LDC WSJ0/WSJ1 discs, audio converted to WAV
=======================  ============================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import soundfile as sf

from memsig.data.io import CorpusError, matched_lines, read_text
from memsig.data.speech.backend import torchaudio
from memsig.data.speech.manifest import Utterance, read_manifest
from memsig.data.wsj import WSJCorpus, normalize_dot

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


class SpeechCorpus(ABC):
    """A source of transcribed utterances with its train/dev/test split."""

    name: str = "speech"
    _loaded: dict[str, list[Utterance]] | None = None

    def utterances(self, split: str) -> list[Utterance]:
        """The utterances of ``split`` (``train``, ``dev`` or ``test``; may be empty), listed once."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; expected train, dev or test")
        if self._loaded is None:
            self._loaded = self.load()
        return list(self._loaded[split])

    @abstractmethod
    def load(self) -> dict[str, list[Utterance]]:
        """Every split's utterances, in corpus order (``[]`` for a split without any)."""


def audio_duration(path: Path) -> float:
    """Seconds of audio from the file's header; 0.0 when it cannot be read (the
    DataModule reports such a file when it reads the audio)."""
    try:
        return float(sf.info(path).duration)
    except (sf.SoundFileError, RuntimeError):
        return 0.0


class ManifestCorpus(SpeechCorpus):
    """Utterances listed in one manifest per split (see :mod:`~memsig.data.speech.manifest`).

    Args:
        train, dev, test: ``.jsonl`` or ``.tsv`` manifests; ``None`` leaves the split empty.
        name: label for logs.
    """

    def __init__(
        self, train: str | None = None, dev: str | None = None, test: str | None = None, name: str = "manifest"
    ) -> None:
        self.paths = {"train": train, "dev": dev, "test": test}
        self.name = name

    def load(self) -> dict[str, list[Utterance]]:
        return {s: read_manifest(p) if p else [] for s, p in self.paths.items()}


class EspeakCorpus(SpeechCorpus):
    """Penn Treebank sentences spoken by espeak-ng voices (unseen voices in dev/test).

    Built by :func:`memsig.data.speech.synth.build_espeak_corpus` on first use into
    ``cache_dir/espeak_ptb_<hash of the settings>``; later uses read its manifests.

    Args:
        cache_dir: folder of built corpora.
        text_root: the ``ptb/`` folder with ``ptb.{train,valid,test}.txt``.
        hours: hours of audio per split, e.g. ``{"train": 4.0, "dev": 0.1, "test": 0.2}``.
        seed: sentence, voice, speed and pitch draws.
        workers: parallel espeak-ng processes (does not change the corpus).
        options: further ``build_espeak_corpus`` settings (accents, variants, speeds, pitches,
            min_chars, max_chars, flite).
    """

    name = "espeak_ptb"

    def __init__(
        self, cache_dir: str, text_root: str, hours: dict[str, float], seed: int = 0, workers: int = 2, **options: Any
    ) -> None:
        self.cache_dir, self.text_root = Path(cache_dir), Path(text_root)
        self.hours = {s: float(h) for s, h in hours.items()}
        self.seed, self.workers, self.options = seed, workers, options

    @property
    def out_dir(self) -> Path:
        """The corpus folder: a hash of every setting that changes the audio."""
        settings = {"text_root": str(self.text_root.absolute()), "hours": self.hours, "seed": self.seed, **self.options}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.cache_dir / f"espeak_ptb_{digest}"

    def load(self) -> dict[str, list[Utterance]]:
        from memsig.data.speech.synth import build_espeak_corpus  # the builder needs espeak-ng only here

        manifests = build_espeak_corpus(
            self.out_dir, self.text_root, self.hours, self.seed, workers=self.workers, **self.options
        )
        return {s: read_manifest(manifests[s]) if s in manifests else [] for s in SPLITS}


def extract_once(archive: Path, target: Path) -> Path:
    """Unpack a tar archive into ``target`` unless it is there; atomically (a temporary
    sibling folder renamed into place), so a killed extraction leaves nothing half-done."""
    if target.is_dir():
        return target
    if not archive.is_file():
        raise CorpusError(
            f"archive {archive} does not exist; check paths.data_dir (MEMSIG_DATA_DIR) or data.corpus.archive"
        )
    log.info("extracting %s -> %s", archive, target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(target)
    except tarfile.TarError as err:
        raise CorpusError(
            f"archive {archive} cannot be extracted ({err}); re-obtain it (see the data README)"
        ) from None
    except OSError:
        if not target.is_dir():  # else another process extracted it first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


class FSDDCorpus(SpeechCorpus):
    """The Free Spoken Digit Dataset: 3000 recordings of single digits (8 kHz, 6 speakers).

    Files ``recordings/{digit}_{speaker}_{index}.wav`` (index 0-49 per speaker and digit);
    the transcript is the digit's word (``zero``..``nine``). The dataset's split: index 0-4
    is test, 5-9 dev, the rest train (2400/300/300 utterances, every speaker in each).

    Args:
        archive: the ``.tar.xz`` of the ``recordings/`` folder.
        cache_dir: the archive is extracted once into ``cache_dir/fsdd``.
    """

    name = "fsdd"

    def __init__(self, archive: str, cache_dir: str) -> None:
        self.archive, self.cache_dir = Path(archive), Path(cache_dir)

    def load(self) -> dict[str, list[Utterance]]:
        folder = extract_once(self.archive, self.cache_dir / "fsdd") / "recordings"
        files = sorted(folder.glob("*.wav"))
        if not files:
            raise CorpusError(
                f"no .wav files in {folder}; delete {folder.parent} and let it be extracted again from {self.archive}"
            )
        out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
        for path in files:
            m = _FSDD_NAME.match(path.stem)
            if not m:
                raise CorpusError(f"FSDD file {path} is not named digit_speaker_index.wav; remove it")
            index = int(m.group(3))
            split = "test" if index < 5 else "dev" if index < 10 else "train"
            out[split].append(
                Utterance(path.stem, str(path), DIGIT_WORDS[int(m.group(1))], m.group(2), audio_duration(path))
            )
        return out


_SPHINX_LINE = re.compile(r"^<s>\s*(.*?)\s*</s>\s*\((\S+)\)$")


class LibriVoxCorpus(SpeechCorpus):
    """pocketsphinx's LibriVox test clips (``apt-get install pocketsphinx-testdata``): 5 read
    sentences of one speaker (16 kHz, 24.7 s), all in the test split (smoke tests only).

    Args:
        root: the folder with the ``.wav`` clips and the ``transcription`` file
            (lines ``<s> text </s> (id)``).
    """

    name = "librivox"

    def __init__(self, root: str = "/usr/share/pocketsphinx/test/data/librivox") -> None:
        self.root = Path(root)

    def load(self) -> dict[str, list[Utterance]]:
        path = self.root / "transcription"
        if not path.is_file():
            raise CorpusError(
                f"LibriVox transcription {path} does not exist; install pocketsphinx-testdata "
                "(apt-get install pocketsphinx-testdata) or set data.corpus.root"
            )
        test = []
        for m in matched_lines(path, _SPHINX_LINE, "LibriVox transcription", "'<s> text </s> (id)'"):
            text, uttid = m.groups()
            audio = self.root / f"{uttid}.wav"
            test.append(Utterance(uttid, str(audio), text, uttid.rsplit("-", 1)[0], audio_duration(audio)))
        return {"train": [], "dev": [], "test": test}


class LibriSpeechCorpus(SpeechCorpus):
    """LibriSpeech (openslr.org/12): ``root/LibriSpeech/<subset>/<speaker>/<chapter>/`` holds
    ``<speaker>-<chapter>.trans.txt`` (lines ``UTTID TRANSCRIPT``) and ``UTTID.flac``.

    Args:
        root: the folder holding ``LibriSpeech/`` (the layout of ``torchaudio.datasets.LIBRISPEECH``).
        train, dev, test: subsets of each split, e.g. ``["train-clean-100"]``, ``["dev-clean"]``.
        download: fetch and unpack a missing subset with ``torchaudio.datasets.LIBRISPEECH``
            (train-clean-100 is 6.3 GB).
    """

    name = "librispeech"

    def __init__(
        self,
        root: str,
        train: Iterable[str] = ("train-clean-100",),
        dev: Iterable[str] = ("dev-clean",),
        test: Iterable[str] = ("test-clean",),
        download: bool = False,
    ) -> None:
        self.root, self.download = Path(root), download
        self.subsets = {"train": tuple(train), "dev": tuple(dev), "test": tuple(test)}

    def subset_dir(self, subset: str) -> Path:
        """The folder of one subset, downloaded first when missing and ``download`` is set."""
        folder = self.root / "LibriSpeech" / subset
        if not folder.is_dir():
            if not self.download:
                raise CorpusError(
                    f"LibriSpeech subset folder {folder} does not exist; set data.corpus.download=true "
                    f"or unpack {subset}.tar.gz from https://www.openslr.org/12 into {self.root}"
                )
            self.root.mkdir(parents=True, exist_ok=True)
            torchaudio("datasets").LIBRISPEECH(self.root, url=subset, download=True)
        return folder

    def load(self) -> dict[str, list[Utterance]]:
        out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
        for split, subsets in self.subsets.items():
            for subset in subsets:
                for trans in sorted(self.subset_dir(subset).glob("*/*/*.trans.txt")):
                    for line in read_text(trans, "LibriSpeech transcript").splitlines():
                        if line.strip():
                            uttid, _, text = line.strip().partition(" ")
                            audio = trans.parent / f"{uttid}.flac"
                            out[split].append(
                                Utterance(uttid, str(audio), text, uttid.split("-")[0], audio_duration(audio))
                            )
        return out


class WSJSpeechCorpus(SpeechCorpus):
    """The LDC WSJ0/WSJ1 discs with their audio: SI-284 / dev93 / eval92.

    Transcripts are the ``.dot`` files, read and cleaned as by
    :class:`~memsig.data.wsj.WSJCorpus` (same ``root`` and subset arguments). The discs'
    audio is NIST SPHERE with shorten compression (``.wv1``), which soundfile cannot read:
    convert it first, e.g. ``sph2pipe -f wav 01ac0101.wv1 01ac0101.wav``, anywhere below
    ``audio_root``; a file's stem is its utterance id. The speaker is the id's first three
    characters. Utterances without an audio file are left out (logged).

    Args:
        root: folder holding the unpacked discs (``.dot`` transcripts).
        audio_root: folder searched for the converted audio (default: ``root``).
        train_subsets, dev_subsets, test_subsets: subset folder names of each split.
        audio_ext: suffix of the converted files.
    """

    name = "wsj_speech"

    def __init__(
        self,
        root: str,
        audio_root: str | None = None,
        train_subsets: Iterable[str] = ("si_tr_s",),
        dev_subsets: Iterable[str] = ("si_dt_20",),
        test_subsets: Iterable[str] = ("si_et_05",),
        audio_ext: str = ".wav",
    ) -> None:
        self.text = WSJCorpus(root, train_subsets, dev_subsets, test_subsets)
        self.audio_root, self.audio_ext = Path(audio_root or root), audio_ext.lower()

    def audio_files(self) -> dict[str, Path]:
        """Utterance id (lower case) -> converted audio file, the first in path order."""
        found = sorted(
            Path(d, f)
            for d, _, names in os.walk(self.audio_root, followlinks=True)
            for f in names
            if f.lower().endswith(self.audio_ext)
        )
        files: dict[str, Path] = {}
        for path in found:
            files.setdefault(path.stem.lower(), path)
        return files

    def load(self) -> dict[str, list[Utterance]]:
        raw: dict[str, dict[str, str]] = {s: {} for s in SPLITS}
        for path in self.text.files():
            split = self.text.split_of(path)
            if split is not None:
                for uttid, text in self.text.read_dot(path):
                    raw[split].setdefault(uttid, text)
        audio = self.audio_files()
        out: dict[str, list[Utterance]] = {}
        for split, texts in raw.items():
            have = [u for u in sorted(texts) if u.lower() in audio]
            if texts and not have:
                raise CorpusError(
                    f"none of the {len(texts)} WSJ {split} utterances has a {self.audio_ext} file below "
                    f"{self.audio_root}; convert the .wv1 files with sph2pipe (see WSJSpeechCorpus)"
                )
            if len(have) < len(texts):
                log.warning(
                    "WSJ %s: %d of %d utterances have no %s file below %s; left out",
                    split,
                    len(texts) - len(have),
                    len(texts),
                    self.audio_ext,
                    self.audio_root,
                )
            out[split] = [
                Utterance(u, str(audio[u.lower()]), normalize_dot(texts[u]), u[:3], audio_duration(audio[u.lower()]))
                for u in have
            ]
        return out
