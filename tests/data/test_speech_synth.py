"""The espeak-ng PTB speech corpus: numbers as words, sentence selection, voices, the build.

Tests that run espeak-ng (or flite) fail when it is missing, naming the install (``make setup``
installs both).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from memsig.data.io import CorpusError
from memsig.data.speech import synth
from memsig.data.speech.numbers import MAX_NUMBER, number_words, ptb_sentence_for_speech
from memsig.resolvers import data_dir
from memsig.vocab import Vocab

from conftest import require_system

PTB = data_dir() / "ptb"
TINY_HOURS = {"train": 30 / 3600, "dev": 20 / 3600, "test": 20 / 3600}
needs_espeak = pytest.mark.system("espeak-ng")
SPEAKABLE = re.compile(r"[a-z]+('[a-z]+)*'?( [a-z]+('[a-z]+)*'?)*")


def ptb_lines(split: str = "train") -> list[str]:
    path = PTB / {"train": "ptb.train.txt", "dev": "ptb.valid.txt", "test": "ptb.test.txt"}[split]
    assert path.is_file(), f"tests read the treebank from {PTB} (set MEMSIG_DATA_DIR); {path} is missing"
    return [" ".join(line.split()) for line in path.read_text().splitlines()]


def ptb_line(start: str) -> str:
    return next(line for line in ptb_lines() if line.startswith(start))


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (45, "forty five"),
        (100, "one hundred"),
        (110, "one hundred ten"),
        (1987, "one thousand nine hundred eighty seven"),
        (1000000, "one million"),
        (2000005, "two million five"),
    ],
)
def test_number_words(n: int, words: str) -> None:
    assert number_words(n) == words


def test_number_words_range() -> None:
    nines = "nine hundred ninety nine"
    assert number_words(MAX_NUMBER) == f"{nines} billion {nines} million {nines} thousand {nines}"
    for bad in (-1, MAX_NUMBER + 1):
        with pytest.raises(ValueError, match="covers"):
            number_words(bad)
    with pytest.raises(TypeError):
        number_words(1.5)  # type: ignore[arg-type]


def test_ptb_numbers_become_words() -> None:
    line = ptb_line("the yield on six-month treasury bills sold at monday 's auction")
    assert line.count("N") == 4 and "<unk>" not in line
    text = ptb_sentence_for_speech(line, np.random.default_rng(0))
    assert text is not None and SPEAKABLE.fullmatch(text)
    assert text.startswith("the yield on six month treasury bills sold at monday's auction")
    assert text.count("percent") == 2  # "N N" is the treebank's "N %"
    assert text == ptb_sentence_for_speech(line, np.random.default_rng(0))
    assert {ptb_sentence_for_speech(line, np.random.default_rng(s)) for s in range(5)} != {text}

    money = ptb_sentence_for_speech(
        ptb_line("it employs N people and has annual revenue of about $ N million"), np.random.default_rng(0)
    )
    assert money is not None and money.endswith(" million dollars")
    date = ptb_sentence_for_speech("the treasury said the u.s. will default on nov. N", np.random.default_rng(0))
    assert date is not None and date.startswith("the treasury said the united states will default on november ")
    assert 1 <= [number_words(d) for d in range(1, 32)].index(date.split("november ")[1]) + 1 <= 31


def test_ptb_unk_and_unspeakable_lines_are_dropped() -> None:
    rng = np.random.default_rng(0)
    assert ptb_sentence_for_speech(ptb_line("pierre <unk> N years old"), rng) is None
    assert ptb_sentence_for_speech("", rng) is None
    assert ptb_sentence_for_speech("the s&p index rose", rng) is None  # no letter-by-letter runs
    assert ptb_sentence_for_speech("john j. smith said", rng) is None  # nor initials
    assert ptb_sentence_for_speech("it is based in hartford conn", rng) == "it is based in hartford connecticut"
    assert ptb_sentence_for_speech("u.s.-soviet trade in the u.s", rng) == (
        "united states soviet trade in the united states"  # final periods are gone in the treebank
    )
    assert ptb_sentence_for_speech("the answer was no", rng) == "the answer was no"
    assert ptb_sentence_for_speech("the investors ' money did n't move", rng) == "the investors' money didn't move"


def test_every_kept_ptb_sentence_is_plain_and_survives_the_vocab() -> None:
    rng, vocab = np.random.default_rng(0), Vocab()
    lines = ptb_lines("dev")
    kept = [(line, ptb_sentence_for_speech(line, rng)) for line in lines]
    assert all(text is None for line, text in kept if "<unk>" in line.split())
    texts = [text for _, text in kept if text is not None]
    assert all(SPEAKABLE.fullmatch(t) and vocab.normalize(t) == t for t in texts)
    no_unk = sum("<unk>" not in line.split() for line in lines)
    assert len(texts) > 0.85 * no_unk  # numbers are spoken, not dropped


def test_split_voices_hold_out_combinations() -> None:
    voices = synth.split_voices(seed=0, flite=True)
    train, dev, test = (set(voices[s]) for s in synth.SPLITS)
    assert not train & test and not train & dev and not dev & test
    grid = {f"{a}+{v}" for a in synth.ACCENTS for v in synth.VARIANTS}
    assert (train | dev | test) - grid == {synth.FLITE_PREFIX + v for v in synth.FLITE_VOICES}
    assert len(test - grid) == len(dev - grid) == 1
    espeak_test = test & grid
    assert len(espeak_test) == 2 * len(synth.ACCENTS)
    assert {v.split("+")[0] for v in espeak_test} == set(synth.ACCENTS)  # every accent held out...
    assert len({v.split("+")[1] for v in espeak_test}) == len(espeak_test)  # ...with distinct variants
    train_accents, train_variants = ({v.split("+")[i] for v in train & grid} for i in (0, 1))
    assert train_accents == set(synth.ACCENTS) and train_variants == set(synth.VARIANTS)
    assert synth.split_voices(seed=0) != synth.split_voices(seed=1)


def test_trim_silence_and_resample() -> None:
    tone = np.sin(np.arange(2205) * 2 * np.pi * 440 / 22050) * 10000
    wave = np.concatenate([np.zeros(3000), tone, np.full(4000, 5.0)])  # faint tail below -50 dB
    trimmed = synth.trim_silence(wave, 22050, margin_ms=10)  # keeps 10 ms = 220.5 samples each side
    assert abs(len(trimmed) - (len(tone) + 2 * 220.5)) <= 2
    assert not trimmed[:200].any() and (trimmed[-200:] == 5.0).all()
    out = synth.resample(tone, 22050, 16000)
    assert len(out) == 1600
    assert abs(np.abs(out[200:-200]).max() / 10000 - 1) < 0.01


def _wave(path: Path) -> np.ndarray:
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    return sf.read(str(path), dtype="float64")[0]


def _edges_loud(wave: np.ndarray, edge: int = 800) -> bool:
    """First and last 50 ms (at 16 kHz) each reach -50 dB of the peak."""
    floor = np.abs(wave).max() * 10 ** (-50 / 20)
    return np.abs(wave[:edge]).max() > floor and np.abs(wave[-edge:]).max() > floor


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_system("espeak-ng")
    out = tmp_path_factory.mktemp("espeak") / "corpus"
    synth.build_espeak_corpus(out, PTB, TINY_HOURS, seed=3, workers=2)
    return out


def _rows(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


@needs_espeak
def test_build_manifests_match_audio(built: Path) -> None:
    for split in synth.SPLITS:
        rows = _rows(built, split)
        assert rows and all(set(r) == {"id", "audio", "text", "speaker", "duration"} for r in rows)
        total = sum(r["duration"] for r in rows)
        assert total >= TINY_HOURS[split] * 3600 > total - rows[-1]["duration"]  # stops once reached
        for r in rows:
            wave = _wave(built / r["audio"])
            assert len(wave) / 16000 == r["duration"] and 1.0 < r["duration"] < 20.0
            assert r["id"].startswith(f"{split}-") and SPEAKABLE.fullmatch(r["text"])
            assert _edges_loud(wave), f"{r['audio']} starts or ends with silence"


@needs_espeak
def test_raw_espeak_audio_fails_the_edge_check() -> None:
    """The trimming check above is not vacuous: espeak-ng pads its output with silence."""
    raw = synth._run(["espeak-ng", "-v", "en-us", "--stdout", "the market closed higher"], "test")
    wave = sf.read(io.BytesIO(raw), dtype="float64")[0]
    assert not _edges_loud(synth.resample(wave, 22050, 16000))
    assert _edges_loud(synth.synthesize("the market closed higher", "en-us+f3", 175, 50) / 32768)


@needs_espeak
def test_build_splits_voices_and_sentences(built: Path) -> None:
    rows = {split: _rows(built, split) for split in synth.SPLITS}
    speakers = {split: {r["speaker"] for r in rows[split]} for split in synth.SPLITS}
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["dev"]
    voices = synth.split_voices(seed=3)
    assert all(speakers[s] <= set(voices[s]) for s in synth.SPLITS)
    texts = {split: {r["text"] for r in rows[split]} for split in synth.SPLITS}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["dev"]
    assert len(speakers["train"]) > 3  # random voice per utterance


@needs_espeak
def test_build_is_deterministic_whatever_the_workers(built: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth.build_espeak_corpus(again, PTB, TINY_HOURS, seed=3, workers=1)
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((built / f).read_bytes() == (again / f).read_bytes() for f in files)


@needs_espeak
def test_rebuild_is_a_noop_and_other_settings_rebuild(built: Path, tmp_path: Path, capsys) -> None:
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*")}
    manifests = synth.build_espeak_corpus(built, PTB, TINY_HOURS, seed=3, workers=1)
    assert manifests == {s: built / f"{s}.jsonl" for s in synth.SPLITS}
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == before

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    synth.build_espeak_corpus(copy, PTB, {"train": 10 / 3600}, seed=4)
    assert json.loads((copy / "build.json").read_text())["settings"]["seed"] == 4
    assert _rows(copy, "dev") == [] and _rows(copy, "train") != _rows(built, "train")
    assert {p.name for p in (copy / "train").iterdir()} == {Path(r["audio"]).name for r in _rows(copy, "train")}

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no build.json"):
        synth.build_espeak_corpus(foreign, PTB, TINY_HOURS)

    hours_args = [arg for split, h in TINY_HOURS.items() for arg in (f"--hours-{split}", str(h))]
    synth.main(["--out", str(built), "--text-root", str(PTB), "--seed", "3", *hours_args])
    out = capsys.readouterr().out
    assert re.search(r"train:\s+\d+ utterances\s+0\.0\d\d h\s+\d+ voices", out) and "wall time" in out
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == before


@needs_espeak
def test_build_rejects_unknown_voices(tmp_path: Path) -> None:
    with pytest.raises(synth.SynthError, match="no variant voice"):
        synth.build_espeak_corpus(tmp_path, PTB, TINY_HOURS, variants=("f3", "no-such-variant", "m2", "m3", "m4"))


def test_missing_espeak_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    synth.tool_version.cache_clear()
    try:
        with pytest.raises(synth.SynthError, match="apt-get install espeak-ng"):
            synth.build_espeak_corpus(tmp_path / "out", PTB, TINY_HOURS)
    finally:
        synth.tool_version.cache_clear()


@pytest.mark.system("flite")
def test_flite_voice_is_16k_and_trimmed() -> None:
    wave = synth.synthesize("the market closed higher", "flite+slt", 175, 50)
    assert wave.dtype == np.int16 and 0.5 < len(wave) / 16000 < 5 and _edges_loud(wave / 32768.0)
