"""A synthetic read-speech corpus: Penn Treebank sentences spoken by espeak-ng voices.

:func:`build_espeak_corpus` writes ``out_dir/<split>/<id>.wav`` (16 kHz mono 16-bit PCM,
leading and trailing silence trimmed) and ``out_dir/<split>.jsonl`` manifests (one JSON
object per line: ``id``, ``audio`` (relative to the manifest's folder), ``text``, ``speaker``,
``duration`` in seconds), then ``out_dir/build.json``.

**Sentences** of train/dev/test come from ``ptb.train/valid/test.txt``, read as
:func:`~memsig.data.speech.numbers.ptb_sentence_for_speech` says (numbers as words, lines
with ``<unk>`` dropped); a line already seen (in its split, or for dev/test in train, for
test in dev) is skipped, so no sentence crosses splits. Sentences of ``min_chars``..``max_chars`` characters are kept
(40..200 is about 2..14 s of speech). Each split draws its sentences in a seeded random order,
without replacement, until its audio reaches ``hours[split]``; the id of an utterance is
``<split>-<line number>`` of its source line.

**Voices** are an espeak-ng accent plus a voice variant (``en-gb-scotland+f3``); the speaker
id is that name. :func:`split_voices` partitions the accent x variant grid so dev and test
voices never occur in train, while every accent and every variant of a held-out voice is still
heard in train in other combinations. Each utterance gets a random voice of its split, speed
(words per minute) and pitch (espeak's 0-99). With ``flite=True`` the flite voices join as
speakers ``flite+<voice>`` (one held out for test, one for dev), spoken at the drawn speed;
flite has no pitch control.

**Determinism**: every random choice of an utterance comes from a generator seeded by
``(seed, split, draw index)``, and the per-split cut-off is taken in draw order, so the same
settings give byte-identical files whatever ``workers``; a larger ``hours`` extends a split
with the same first utterances.

**Idempotence and atomicity**: ``build.json`` holds every setting that shapes the output (plus
the espeak-ng/flite versions and the text files' sha256) and ``"complete": true`` once the
manifests are written (each atomically, after all audio). Building again with the same
settings does nothing; with other settings (or after an interrupted build) the folder's
splits are deleted and rebuilt. A folder with split data but no ``build.json`` is not touched.

Run ``python -m memsig.data.speech.synth --out DIR --text-root DIR`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from memsig.data.corpora import PTBCorpus
from memsig.data.io import CorpusError, atomic_write_bytes, read_text, sha256_of
from memsig.data.speech.numbers import ptb_sentence_for_speech

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
#: espeak-ng English accents (voice names of ``espeak-ng --voices=en``).
ACCENTS: tuple[str, ...] = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
)  # fmt: skip
#: espeak-ng voice variants (files of ``espeak-ng --voices=variant``): the numbered male and
#: female variants, the Klatt-synthesiser ones and a few character voices; robotic, whispered
#: and joke variants are left out.
VARIANTS: tuple[str, ...] = (
    "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "aunty", "belinda", "david",
    "edward", "john", "linda", "paul", "robert", "steph",
)  # fmt: skip
#: flite voices at 16 kHz (``kal`` is the 8 kHz version of ``kal16``).
FLITE_VOICES: tuple[str, ...] = ("kal16", "awb", "rms", "slt")
FLITE_PREFIX = "flite+"
DEFAULT_HOURS: dict[str, float] = {"train": 4.0, "dev": 0.1, "test": 0.2}
_BUILDER_VERSION = 1  # bump when the audio or manifests of the same settings change
_CHARS_PER_SECOND = 14.0  # first guess of speaking rate, refined from the audio built so far


class SynthError(CorpusError):
    """A synthesiser is missing or failed; the message names the tool, voice and fix."""


@dataclass(frozen=True)
class _Job:
    """One utterance to synthesise."""

    id: str
    text: str
    voice: str
    speed: int
    pitch: int


def _run(cmd: list[str], what: str, check: bool = True) -> bytes:
    """stdout of ``cmd``; :class:`SynthError` naming ``what`` when it is missing or (``check``) fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError:
        raise SynthError(
            f"{cmd[0]} is not installed; install it (`apt-get install {cmd[0]}`) to build the synthetic speech corpus"
        ) from None
    if check and done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise SynthError(f"{cmd[0]} failed on {what} (exit {done.returncode}): {err}")
    return done.stdout


@functools.cache
def tool_version(tool: str) -> str:
    """What ``espeak-ng --version`` or ``flite --version`` prints (flite exits 1 doing so), on one
    line; :class:`SynthError` when the tool is missing."""
    return " ".join(_run([tool, "--version"], "--version", check=False).decode(errors="replace").split())


def espeak_voices(kind: str) -> set[str]:
    """Names espeak-ng accepts for ``kind``: ``"en"`` (English voices, e.g. ``en-gb-x-rp``) or
    ``"variant"`` (variant files, e.g. ``f3``; usable as ``en-us+f3``)."""
    out = _run(["espeak-ng", f"--voices={kind}"], f"--voices={kind}").decode(errors="replace")
    rows = [line.split() for line in out.splitlines()[1:]]
    if kind == "variant":
        return {row[4].split("/", 1)[1] for row in rows if len(row) > 4 and "/" in row[4]}
    return {row[1] for row in rows if len(row) > 1}


def split_voices(
    accents: Sequence[str] = ACCENTS,
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    dev_per_accent: int = 1,
    test_per_accent: int = 2,
    flite: bool = False,
) -> dict[str, list[str]]:
    """Partition the accent x variant voices into train/dev/test (sorted names per split).

    The variants are put in a seeded random order; accent ``i`` holds out the next
    ``test_per_accent`` variants of that order for test and ``dev_per_accent`` for dev, starting
    where accent ``i - 1`` stopped (wrapping around). So held-out voices spread over all accents
    and over as many variants as possible, and none is used in train, yet train still hears every
    accent and every variant in other combinations. flite voices (``flite=True``) are shuffled
    with the same seed: the first is test, the second dev, the rest train.
    """
    per_accent = dev_per_accent + test_per_accent
    if len(set(variants)) != len(variants) or len(set(accents)) != len(accents):
        raise ValueError(f"accents and variants must not repeat: {accents}, {variants}")
    if dev_per_accent < 0 or test_per_accent < 0 or per_accent >= len(variants):
        raise ValueError(
            f"holding out {per_accent} of {len(variants)} variants per accent leaves none for "
            "train; lower dev_per_accent/test_per_accent or give more variants"
        )
    rng = np.random.default_rng([seed, 1])
    order = [variants[i] for i in rng.permutation(len(variants))]
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for a, accent in enumerate(accents):
        held = [order[(a * per_accent + k) % len(order)] for k in range(per_accent)]
        for variant in variants:
            split = "train"
            if variant in held:
                split = "test" if held.index(variant) < test_per_accent else "dev"
            out[split].append(f"{accent}+{variant}")
    if flite:
        shuffled = [FLITE_VOICES[i] for i in rng.permutation(len(FLITE_VOICES))]
        for k, voice in enumerate(shuffled):
            out["test" if k == 0 else "dev" if k == 1 else "train"].append(FLITE_PREFIX + voice)
    return {split: sorted(voices) for split, voices in out.items()}


@functools.lru_cache(maxsize=8)
def _polyphase_filter(orig: int, new: int, zeros: int, rolloff: float) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Hann-windowed sinc taps of each output phase for resampling ``orig`` -> ``new`` Hz.

    With ``up/down = new/orig`` in lowest terms, output ``m * up + r`` lies ``r * down / up``
    input samples after input ``m * down``. Its taps (``zeros`` zero crossings each side,
    cut-off ``rolloff`` times the lower Nyquist) weigh the inputs ``m * down + first[r] - half``
    onwards. Returns (taps [up, 2 * half + 2], first [up], up, down, half).
    """
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    cutoff = min(1.0, new / orig) * rolloff  # in units of the input Nyquist frequency
    half = math.ceil(zeros / cutoff)
    phase = np.arange(up) * down
    offsets = np.arange(2 * half + 2)[None, :] - half - (phase % up)[:, None] / up  # [up, taps]
    window = np.where(np.abs(offsets) * cutoff < zeros, np.cos(np.pi * offsets * cutoff / (2 * zeros)) ** 2, 0.0)
    return cutoff * np.sinc(cutoff * offsets) * window, phase // up, up, down, half


def resample(wave: np.ndarray, orig: int, new: int, zeros: int = 8, rolloff: float = 0.94) -> np.ndarray:
    """Band-limited resampling of ``wave`` [S] (any float or int dtype) from ``orig`` to ``new`` Hz.

    A fixed polyphase windowed-sinc filter (see :func:`_polyphase_filter`): the input is cut
    into overlapping windows, one per block of ``up`` outputs, and each output phase is one
    matrix-vector product over the windows. Returns float64 [ceil(S * new / orig)] on the
    input's scale.
    """
    if orig == new:
        return wave.astype(np.float64)
    taps, first, up, down, half = _polyphase_filter(orig, new, zeros, rolloff)
    n_out = -(-len(wave) * up // down)
    blocks = -(-n_out // up)
    width = down + taps.shape[1]
    padded = np.zeros(blocks * down + width)
    padded[half : half + len(wave)] = wave
    step = padded.strides[0]
    windows = np.lib.stride_tricks.as_strided(padded, (blocks, width), (step * down, step), writeable=False)
    out = np.empty((blocks, up))
    for r in range(up):
        out[:, r] = windows[:, first[r] : first[r] + taps.shape[1]] @ taps[r]
    return out.reshape(-1)[:n_out]


def trim_silence(
    wave: np.ndarray, sample_rate: int, threshold_db: float = -50.0, margin_ms: float = 10.0
) -> np.ndarray:
    """``wave`` [S] without its leading and trailing silence.

    Silence is every sample below ``threshold_db`` relative to the peak; ``margin_ms`` of it is
    kept on each side of the first and last louder sample. An all-zero wave is returned as is.
    """
    peak = np.abs(wave).max(initial=0)
    if peak == 0:
        return wave
    loud = np.flatnonzero(np.abs(wave) > peak * 10 ** (threshold_db / 20))
    margin = round(margin_ms * sample_rate / 1000)
    return wave[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """``text`` spoken by ``voice`` (espeak-ng ``accent+variant``, or ``flite+<voice>``) at
    ``speed`` words per minute and espeak ``pitch`` (ignored by flite): int16 [S] at 16 kHz,
    silence trimmed. Raises :class:`SynthError` when the synthesiser fails or is silent."""
    what = f"voice {voice!r}, text {text!r}"
    if voice.startswith(FLITE_PREFIX):
        stretch = f"duration_stretch={175 / speed:.4f}"
        cmd = ["flite", "-voice", voice[len(FLITE_PREFIX) :], "--setf", stretch, "-t", text, "-o", "/dev/stdout"]
    else:
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    try:
        wave, rate = sf.read(io.BytesIO(_run(cmd, what)), dtype="int16")
    except sf.LibsndfileError as err:
        raise SynthError(f"{cmd[0]} wrote no readable WAV for {what}: {err}") from None
    if wave.ndim != 1 or not np.abs(wave).max(initial=0):
        raise SynthError(f"{cmd[0]} gave silent or multi-channel audio for {what}")
    out = resample(trim_silence(wave, rate), rate, SAMPLE_RATE)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def _write_utterance(job: _Job, path: Path) -> int:
    """Synthesise ``job`` into the WAV file ``path``; returns its number of samples."""
    wave = synthesize(job.text, job.voice, job.speed, job.pitch)
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    atomic_write_bytes(path, buffer.getvalue())
    return len(wave)


def _read_lines(text_root: Path) -> dict[str, list[tuple[int, str]]]:
    """(line number, line) of each split's treebank file, without lines seen before (in this
    split or an earlier one of train, dev, test)."""
    seen: set[str] = set()
    out: dict[str, list[tuple[int, str]]] = {}
    for split in SPLITS:
        lines = []
        for number, line in enumerate(read_text(text_root / PTBCorpus.FILES[split]).splitlines(), 1):
            line = " ".join(line.split())
            if line and line not in seen:
                seen.add(line)
                lines.append((number, line))
        out[split] = lines
    return out


@dataclass(frozen=True)
class _Settings:
    """The settings that shape the corpus (all but ``workers``)."""

    hours: dict[str, float]
    seed: int
    accents: tuple[str, ...]
    variants: tuple[str, ...]
    speeds: tuple[int, int]
    pitches: tuple[int, int]
    chars: tuple[int, int]
    flite: bool

    def check(self) -> None:
        """Clear errors for settings espeak-ng would reject or that cannot give a corpus."""
        if any(h < 0 for h in self.hours.values()):
            raise ValueError(f"hours must be >= 0, got {self.hours}")
        if not 80 <= self.speeds[0] <= self.speeds[1] <= 450:
            raise ValueError(f"speeds {self.speeds} must be (low, high) words per minute within 80..450")
        if not 0 <= self.pitches[0] <= self.pitches[1] <= 99:
            raise ValueError(f"pitches {self.pitches} must be (low, high) within espeak's 0..99")
        if not 1 <= self.chars[0] <= self.chars[1]:
            raise ValueError(f"min_chars/max_chars {self.chars} must satisfy 1 <= min <= max")
        for kind, asked in (("en", self.accents), ("variant", self.variants)):
            missing = sorted(set(asked) - espeak_voices(kind))
            if missing:
                raise SynthError(f"espeak-ng has no {kind} voice {missing}; see `espeak-ng --voices={kind}`")

    def stamp(self, text_root: Path) -> dict:
        """The settings with the synthesiser versions and text checksums, as in ``build.json``."""
        stamp = dict(
            builder=_BUILDER_VERSION, **asdict(self),
            espeak=tool_version("espeak-ng"), flite_version=tool_version("flite") if self.flite else None,
            text_sha256={split: sha256_of(text_root / PTBCorpus.FILES[split]) for split in SPLITS},
        )  # fmt: skip
        return json.loads(json.dumps(stamp))

    def jobs(self, split: str, lines: list[tuple[int, str]], voices: list[str]) -> Iterator[_Job]:
        """The split's utterances in draw order, each drawn from its own seeded generator."""
        code = SPLITS.index(split)
        order = np.random.default_rng([self.seed, code]).permutation(len(lines))
        for k, index in enumerate(order):
            number, line = lines[index]
            rng = np.random.default_rng([self.seed, code, k])
            text = ptb_sentence_for_speech(line, rng)
            if text is None or not self.chars[0] <= len(text) <= self.chars[1]:
                continue
            voice = voices[int(rng.integers(len(voices)))]
            speed = int(rng.integers(self.speeds[0], self.speeds[1] + 1))
            pitch = int(rng.integers(self.pitches[0], self.pitches[1] + 1))
            yield _Job(f"{split}-{number:05d}", text, voice, speed, pitch)


def _build_split(
    jobs: Iterator[_Job], target_s: float, folder: Path, pool: ThreadPoolExecutor, workers: int
) -> list[dict]:
    """Synthesise jobs in order until their audio reaches ``target_s``; the manifest rows.

    Jobs are sent in batches (at least two per worker) sized from the speaking rate seen so
    far; results are taken in draw order, so the cut-off (and every file kept) does not depend
    on the batching. Files of a batch past the cut-off are deleted.
    """
    rows: list[dict] = []
    total_s, chars_done, rate = 0.0, 0, _CHARS_PER_SECOND
    while total_s < target_s:
        budget = (target_s - total_s) * rate * 1.05
        batch: list[_Job] = []
        while budget > 0 or len(batch) < 2 * workers:
            job = next(jobs, None)
            if job is None:
                break
            batch.append(job)
            budget -= len(job.text)
        if not batch:
            log.warning("%s: sentences ran out at %.2f of %.2f h", folder.name, total_s / 3600, target_s / 3600)
            break
        paths = [folder / f"{job.id}.wav" for job in batch]
        for job, path, samples in zip(batch, paths, pool.map(_write_utterance, batch, paths)):
            if total_s >= target_s:
                path.unlink()
                continue
            duration = samples / SAMPLE_RATE
            audio = f"{folder.name}/{path.name}"
            rows.append(dict(id=job.id, audio=audio, text=job.text, speaker=job.voice, duration=duration))
            total_s += duration
            chars_done += len(job.text)
        rate = chars_done / total_s
    return rows


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_espeak_corpus(
    out_dir: str | Path,
    text_root: str | Path,
    hours: Mapping[str, float] | None = None,
    seed: int = 0,
    accents: Sequence[str] = ACCENTS,
    variants: Sequence[str] = VARIANTS,
    speeds: tuple[int, int] = (140, 210),
    pitches: tuple[int, int] = (30, 70),
    min_chars: int = 40,
    max_chars: int = 200,
    flite: bool = False,
    workers: int = 2,
) -> dict[str, Path]:
    """Build (or find up to date) the espeak-ng PTB speech corpus in ``out_dir``.

    Args:
        out_dir: output folder (created); see the module docstring for its layout.
        text_root: the folder with ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``.
        hours: hours of audio per split, e.g. ``{"train": 4.0, "dev": 0.1, "test": 0.2}``
            (:data:`DEFAULT_HOURS`); a missing split or 0 gives an empty manifest.
        seed: seeds the sentence order, voice split and every per-utterance choice.
        accents, variants: the voice grid (see :func:`split_voices`).
        speeds, pitches: inclusive ranges of words per minute and espeak pitch, drawn uniformly.
        min_chars, max_chars: length range of the sentences kept (after numbers became words).
        flite: add the flite voices (needs ``flite``).
        workers: synthesiser processes run at once; the output does not depend on it.

    Returns:
        split -> path of its JSONL manifest (all three splits).

    Raises:
        SynthError: espeak-ng (or flite) is missing, lacks a voice or fails.
        CorpusError: a treebank file is missing or unreadable, or ``out_dir`` holds split data
            without a ``build.json`` (it is left alone).
    """
    out_dir, text_root = Path(out_dir), Path(text_root)
    hours = dict(DEFAULT_HOURS if hours is None else hours)
    if set(hours) - set(SPLITS):
        raise ValueError(f"hours must map train/dev/test to hours, got {hours}")
    settings = _Settings(
        {split: float(hours.get(split, 0.0)) for split in SPLITS}, int(seed), tuple(accents), tuple(variants),
        (int(speeds[0]), int(speeds[1])), (int(pitches[0]), int(pitches[1])), (int(min_chars), int(max_chars)),
        bool(flite),
    )  # fmt: skip
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings.check()
    stamp = settings.stamp(text_root)
    manifests = {split: out_dir / f"{split}.jsonl" for split in SPLITS}
    stamp_path = out_dir / "build.json"
    found = _read_stamp(stamp_path)
    if found == {"settings": stamp, "complete": True} and all(p.exists() for p in manifests.values()):
        log.info("speech corpus in %s is up to date", out_dir)
        return manifests
    ours = [out_dir / split for split in SPLITS] + list(manifests.values())
    if found is None and any(p.exists() for p in ours):
        raise CorpusError(
            f"{out_dir} holds train/dev/test data but no build.json, so it was not built here; "
            "give another output folder or delete that data"
        )
    if found is not None:
        log.info("rebuilding the speech corpus in %s (other settings or an unfinished build)", out_dir)
    atomic_write_bytes(stamp_path, json.dumps({"settings": stamp, "complete": False}, indent=1).encode())
    for path in ours:
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)

    lines = _read_lines(text_root)
    voices = split_voices(settings.accents, settings.variants, settings.seed, flite=settings.flite)
    rows: dict[str, list[dict]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in SPLITS:
            folder = out_dir / split
            folder.mkdir(parents=True)
            jobs = settings.jobs(split, lines[split], voices[split])
            rows[split] = _build_split(jobs, settings.hours[split] * 3600, folder, pool, workers)
            hours_built = sum(row["duration"] for row in rows[split]) / 3600
            log.info("%s: %d utterances, %.3f h", split, len(rows[split]), hours_built)
    for split, path in manifests.items():
        atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in rows[split]).encode())
    atomic_write_bytes(stamp_path, json.dumps({"settings": stamp, "complete": True}, indent=1).encode())
    return manifests


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: build the corpus and print utterances, hours and voices per split."""
    parser = argparse.ArgumentParser(prog="python -m memsig.data.speech.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--text-root", required=True, help="folder with ptb.{train,valid,test}.txt")
    for split, default in DEFAULT_HOURS.items():
        parser.add_argument(f"--hours-{split}", type=float, default=default, help=f"hours of {split} audio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--flite", action="store_true", help="add the flite voices")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hours = {split: getattr(args, f"hours_{split}") for split in SPLITS}
    start = time.perf_counter()
    manifests = build_espeak_corpus(args.out, args.text_root, hours, args.seed, flite=args.flite, workers=args.workers)
    wall = time.perf_counter() - start
    for split, path in manifests.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        seconds = sum(r["duration"] for r in rows)
        speakers = len({r["speaker"] for r in rows})
        print(f"{split:5s}: {len(rows):6d} utterances  {seconds / 3600:7.3f} h  {speakers:3d} voices  {path}")
    print(f"wall time {wall:.1f} s")


if __name__ == "__main__":
    main()
