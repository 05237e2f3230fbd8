"""Speech data: manifests, audio reading, features, corpora, the SpeechDataModule and its configs.

Real audio throughout: the Free Spoken Digit Dataset archive in the shared data folder
(8 kHz) and pocketsphinx's LibriVox clips (16 kHz); broken files are written to tmp_path.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from memsig.data.io import CorpusError
from memsig.data.speech import (
    AudioError,
    EspeakCorpus,
    FSDDCorpus,
    LibriSpeechCorpus,
    LibriVoxCorpus,
    LogMel,
    ManifestCorpus,
    SpecAugment,
    SpeechCorpus,
    SpeechDataModule,
    Utterance,
    WSJSpeechCorpus,
    read_audio,
    read_manifest,
    write_manifest,
)
from memsig.data.speech.datamodule import length_buckets
from memsig.resolvers import data_dir
from memsig.vocab import Vocab

from conftest import compose_cfg, require_system

FSDD_ARCHIVE = data_dir() / "speech" / "fsdd_recordings.tar.xz"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"  # 2.99 s, 16 kHz

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech_cache")


@pytest.fixture(scope="module")
def fsdd(cache_dir: Path) -> FSDDCorpus:
    assert FSDD_ARCHIVE.is_file(), f"tests read {FSDD_ARCHIVE} (set MEMSIG_DATA_DIR)"
    return FSDDCorpus(str(FSDD_ARCHIVE), str(cache_dir))


@pytest.fixture(scope="module")
def librivox() -> LibriVoxCorpus:
    require_system("pocketsphinx-testdata")
    return LibriVoxCorpus(str(LIBRIVOX))


@pytest.fixture(scope="module")
def fsdd_dm(fsdd: FSDDCorpus) -> SpeechDataModule:
    """FSDD, 120 train / 60 dev / 30 test utterances, small batches, SpecAugment on."""
    dm = SpeechDataModule(
        Vocab(),
        fsdd,
        spec_augment=SpecAugment(),
        batch_seconds=6.0,
        eval_batch_seconds=6.0,
        max_batch_size=16,
        limit={"train": 120, "dev": 60, "test": 30},
    )
    dm.setup()
    return dm


def _write_wave(path: Path, wave: np.ndarray, rate: int = 16000) -> str:
    sf.write(path, wave, rate, subtype="PCM_16")
    return str(path)


# ------------------------------------------------------------------------------ features
def test_logmel_equals_torchaudio_melspectrogram_and_log():
    wave = read_audio(CLIP)
    feats = LogMel()(wave)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, win_length=400, hop_length=160, n_mels=80)
    expected = torch.log(mel(wave) + 1e-6).T
    assert feats.shape == (LogMel().frames(len(wave)), 80) == expected.shape
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)
    assert LogMel().frame_rate == 100.0 and LogMel(sample_rate=8000).n_fft == 256
    normed = LogMel(normalize=True)(wave)
    torch.testing.assert_close(normed.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed.std(0, unbiased=False), torch.ones(80), atol=1e-3, rtol=0)


def test_spec_augment_masks_within_limits_and_only_in_training():
    feats = torch.randn(300, 80) + 5
    aug = SpecAugment(freq_masks=1, freq_width=15, time_masks=1, time_width=40, max_time_ratio=0.1)
    torch.manual_seed(0)
    for _ in range(20):
        masked = aug(feats) != feats  # masks are filled with the mean, which no entry equals
        assert int(masked.all(0).sum()) <= 15 and int(masked.all(1).sum()) <= 30  # 10% of 300 frames
    assert (aug(feats) != feats).any()
    assert aug.eval()(feats) is feats


# --------------------------------------------------------------------------------- audio
def test_fsdd_8khz_is_resampled_to_16khz(fsdd: FSDDCorpus):
    path = fsdd.utterances("test")[0].audio
    native = sf.info(path)
    assert native.samplerate == 8000
    assert abs(len(read_audio(path, 16000)) - 2 * native.frames) <= 1
    assert len(read_audio(path, 8000)) == native.frames
    with pytest.raises(AudioError, match=rf"{Path(path).name}.*8000 Hz, expected 16000 Hz.*sox"):
        read_audio(path, 16000, resample=False)


@pytest.mark.parametrize("case", ["missing", "corrupt", "silent", "empty"])
def test_bad_audio_raises_an_error_naming_the_file_and_the_fix(case: str, tmp_path: Path):
    path = tmp_path / f"{case}.wav"
    if case == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif case in ("silent", "empty"):
        _write_wave(path, np.zeros(0 if case == "empty" else 16000))
    fix = {
        "missing": "check the corpus/manifest paths",
        "corrupt": "cannot be decoded.*re-create or re-download",
        "silent": "is silent.*check the recording",
        "empty": "has no samples",
    }[case]
    with pytest.raises(AudioError, match=rf"{re.escape(str(path))}.*{fix}.*on_bad_audio=skip"):
        read_audio(path)


# ------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_manifest_round_trip(suffix: str, tmp_path: Path):
    (tmp_path / "corpus" / "wav").mkdir(parents=True)
    utts = [
        Utterance("a1", str(tmp_path / "corpus" / "wav" / "a1.wav"), "Hello, World!", "spk1", 1.25),
        Utterance("b2", str(CLIP), "he was not an ill disposed young man", "austen", 2.99),
    ]
    path = tmp_path / "corpus" / f"train{suffix}"
    write_manifest(path, utts)
    assert read_manifest(path) == utts
    text = path.read_text()
    assert "wav/a1.wav" in text and str(tmp_path) not in text  # below the manifest's folder: relative
    assert str(CLIP) in text
    if suffix == ".tsv":
        assert text.splitlines()[0] == "id\taudio\ttext\tspeaker\tduration"
        with pytest.raises(CorpusError, match="tab or newline.*train.jsonl"):
            write_manifest(path, [Utterance("c", "c.wav", "a\tb", "s", 1.0)])
    else:
        path.write_text(text + '{"id": "c3", "audio": "x.wav"}\n')
        with pytest.raises(CorpusError, match=rf"{re.escape(str(path))} line 3: missing field\(s\) text, speaker"):
            read_manifest(path)
    with pytest.raises(CorpusError, match="name it"):
        read_manifest(tmp_path / "train.csv")


# ------------------------------------------------------------------------------- corpora
def test_fsdd_and_librivox_corpora(fsdd: FSDDCorpus, librivox: LibriVoxCorpus):
    sizes = {s: len(fsdd.utterances(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 2400, "dev": 300, "test": 300}
    u = fsdd.utterances("dev")[0]
    assert (u.id, u.text, u.speaker) == ("0_george_5", "zero", "george") and 0.1 < u.duration < 2.3
    assert {x.id.split("_")[2] for x in fsdd.utterances("test")} == {"0", "1", "2", "3", "4"}
    assert librivox.utterances("train") == librivox.utterances("dev") == []
    test = librivox.utterances("test")
    assert len(test) == 5 and test[1].text == "he was not an ill disposed young man"
    assert abs(sum(x.duration for x in test) - 24.73) < 0.01
    with pytest.raises(KeyError, match="unknown split"):
        librivox.utterances("valid")


def _tree(root: Path, files: dict[str, str]) -> None:
    """Write text files (``name.flac``/``name.wav``: the LibriVox clip's audio) below ``root``."""
    wave, rate = sf.read(CLIP)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith((".flac", ".wav")):
            sf.write(root / rel, wave, rate)
        else:
            (root / rel).write_text(text)


def test_librispeech_and_wsj_layouts(tmp_path: Path):
    chapter = "LibriSpeech/dev-clean/84/121123"
    _tree(
        tmp_path / "ls",
        {
            f"{chapter}/84-121123.trans.txt": "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT NO\n",
            f"{chapter}/84-121123-0000.flac": "",
            f"{chapter}/84-121123-0001.flac": "",
        },
    )
    ls = LibriSpeechCorpus(str(tmp_path / "ls"), train=[], dev=["dev-clean"], test=["test-clean"])
    with pytest.raises(CorpusError, match="test-clean does not exist; set data.corpus.download=true"):
        ls.utterances("dev")
    ls.subsets["test"] = ()
    dev = ls.utterances("dev")
    assert [(u.id, u.text, u.speaker, u.duration) for u in dev] == [
        ("84-121123-0000", "GO DO YOU HEAR", "84", 2.99),
        ("84-121123-0001", "BUT NO", "84", 2.99),
    ]
    assert Path(dev[0].audio) == tmp_path / "ls" / chapter / "84-121123-0000.flac"
    _tree(
        tmp_path / "wsj",
        {
            "wsj0/si_tr_s/01a/01ac0100.dot": "PRICES \\COMMA FELL (01ac0101)\nNO AUDIO (01ac0102)\n",
            "wsj0/si_et_05/440/440c0200.dot": "EVAL ONE (440c0201)\n",
            "wav/01AC0101.wav": "",
            "wav/440c0201.wav": "",
        },
    )
    wsj = WSJSpeechCorpus(str(tmp_path / "wsj"))
    assert [(u.id, u.text, u.speaker) for u in wsj.utterances("train")] == [("01ac0101", "PRICES, FELL", "01a")]
    assert wsj.utterances("dev") == [] and wsj.utterances("test")[0].audio.endswith("wav/440c0201.wav")
    with pytest.raises(CorpusError, match="none of the 2 WSJ train utterances has a .flac file.*sph2pipe"):
        WSJSpeechCorpus(str(tmp_path / "wsj"), audio_ext=".flac").utterances("train")


def test_espeak_corpus_builds_once_and_batches(tmp_path: Path):
    hours = {"train": 0.01, "dev": 0.003, "test": 0.003}
    corpus = EspeakCorpus(str(tmp_path), str(data_dir() / "ptb"), hours, seed=0)
    assert corpus.out_dir == EspeakCorpus(str(tmp_path), str(data_dir() / "ptb"), hours, workers=1).out_dir
    assert corpus.out_dir != EspeakCorpus(str(tmp_path), str(data_dir() / "ptb"), hours, seed=1).out_dir
    utts = {s: corpus.utterances(s) for s in ("train", "dev", "test")}
    assert all(utts.values()) and not {u.speaker for u in utts["test"]} & {u.speaker for u in utts["train"]}
    assert all(Path(u.audio).is_file() and sf.info(u.audio).samplerate == 16000 for u in utts["train"])
    stamp = (corpus.out_dir / "build.json").stat().st_mtime_ns
    again = EspeakCorpus(str(tmp_path), str(data_dir() / "ptb"), hours, seed=0)
    assert again.utterances("train") == utts["train"] and (corpus.out_dir / "build.json").stat().st_mtime_ns == stamp
    dm = SpeechDataModule(Vocab(), again)
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["utt_ids"]) == sorted(u.id for u in utts["train"])
    assert dm.vocab.decode(dm.ids("dev")) == " ".join(dm.vocab.normalize(u.text) for u in utts["dev"])


# ---------------------------------------------------------------------------- datamodule
def test_batches_follow_the_contract(fsdd_dm: SpeechDataModule, librivox: LibriVoxCorpus):
    dm = SpeechDataModule(Vocab(), librivox)
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {
        "features",
        "feature_lengths",
        "tokens",
        "token_lengths",
        "utt_ids",
        "speakers",
        "texts",
        "carry",
    }
    feats, flen, tokens, tlen = batch["features"], batch["feature_lengths"], batch["tokens"], batch["token_lengths"]
    assert feats.dtype == torch.float32 and tokens.dtype == flen.dtype == tlen.dtype == torch.long
    assert feats.shape == (5, int(flen.max()), 80) and tokens.shape == (5, int(tlen.max()))
    assert torch.all(flen[:-1] >= flen[1:]) and batch["carry"] is False
    assert dm.feature_dim == 80 and dm.frame_rate == 100.0
    raw = {u.id: u.text for u in librivox.utterances("test")}
    for i, uid in enumerate(batch["utt_ids"]):
        assert flen[i] == LogMel().frames(round(16000 * sf.info(LIBRIVOX / f"{uid}.wav").duration))
        assert (feats[i, flen[i] :] == 0).all() and (feats[i, : flen[i]] != 0).any(dim=1).all()
        assert (tokens[i, tlen[i] :] == 0).all()
        assert dm.vocab.decode(tokens[i, : tlen[i]]) == batch["texts"][i] == dm.vocab.normalize(raw[uid])
    stored = {e.id: e.features for e in dm.examples["test"]}
    assert all(f.dtype == torch.float16 for f in stored.values())


def test_ids_join_the_normalised_transcripts(fsdd_dm: SpeechDataModule, librivox: LibriVoxCorpus):
    for split in ("train", "dev", "test"):
        texts = [Vocab().normalize(u.text) for u in fsdd_dm.corpus.utterances(split)[: fsdd_dm.limit[split]]]
        assert fsdd_dm.vocab.decode(fsdd_dm.ids(split)) == " ".join(texts)
    dm = SpeechDataModule(Vocab(), librivox)
    assert dm.ids("train").numel() == 0 and dm.ids("dev").shape == (0,)
    assert dm.vocab.decode(dm.ids("test")).startswith("and mister john dashwood had then")
    for loader in (dm.train_dataloader, dm.val_dataloader):
        with pytest.raises(CorpusError, match="has no utterances.*LibriVox is test-only"):
            loader()


def test_bucketing_visits_every_utterance_once_within_the_budget(fsdd_dm: SpeechDataModule):
    loader = fsdd_dm.train_dataloader()
    orders = []
    for epoch in (0, 1, 1):
        loader.sampler.set_epoch(epoch)  # as Lightning does before each training epoch
        seen = []
        for batch in loader:
            b, t = batch["features"].shape[:2]
            assert b <= 16 and b * t / fsdd_dm.frame_rate <= 6.0
            seen += batch["utt_ids"]
        assert sorted(seen) == sorted(e.id for e in fsdd_dm.examples["train"])
        orders.append(seen)
    assert orders[0] != orders[1] == orders[2]  # a new order per epoch, the same for the same epoch
    val_order = [b["utt_ids"] for b in fsdd_dm.val_dataloader()]
    assert val_order == [b["utt_ids"] for b in fsdd_dm.val_dataloader()]
    assert length_buckets([5, 1, 30, 2, 2], max_frames=10, max_batch_size=3) == [[1, 3, 4], [0], [2]]


def test_spec_augment_only_changes_training_batches(fsdd_dm: SpeechDataModule):
    stored = {e.id: e.features.float() for split in ("train", "dev", "test") for e in fsdd_dm.examples[split]}

    def changed(loader) -> list[bool]:
        return [
            not torch.equal(batch["features"][i, : batch["feature_lengths"][i]], stored[uid])
            for batch in loader
            for i, uid in enumerate(batch["utt_ids"])
        ]

    assert any(changed(fsdd_dm.train_dataloader()))
    assert not any(changed(fsdd_dm.val_dataloader())) and not any(changed(fsdd_dm.test_dataloader()))


class _Listed(SpeechCorpus):
    name = "listed"

    def __init__(self, train: list[Utterance]) -> None:
        self.train = train

    def load(self) -> dict[str, list[Utterance]]:
        return {"train": self.train, "dev": [], "test": []}


def test_bad_audio_is_skipped_with_a_warning_or_raises(
    tmp_path: Path, librivox: LibriVoxCorpus, caplog: pytest.LogCaptureFixture
):
    good = librivox.utterances("test")[:2]
    (tmp_path / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(3000))
    bad = [
        Utterance("corrupt", str(tmp_path / "corrupt.wav"), "x", "s", 1.0),
        Utterance("silent", _write_wave(tmp_path / "silent.wav", np.zeros(8000)), "x", "s", 0.5),
        Utterance("missing", str(tmp_path / "missing.wav"), "x", "s", 1.0),
        Utterance("empty_text", good[0].audio, "~ %", "s", 1.0),
        Utterance("too_long", good[0].audio, "long", "s", 7.1),
    ]
    manifest = tmp_path / "train.tsv"
    write_manifest(manifest, [good[0], *bad, good[1]])
    dm = SpeechDataModule(Vocab(), ManifestCorpus(train=str(manifest)), max_seconds=5.0)
    with caplog.at_level(logging.WARNING, logger="memsig.data.speech"):
        dm.setup()
    assert [e.id for e in dm.examples["train"]] == [good[1].id]  # good[0] is 7.1 s > max_seconds
    reasons = dict(dm.skipped["train"])
    assert list(reasons) == [good[0].id, "corrupt", "silent", "missing", "empty_text", "too_long"]
    assert "longer than data.max_seconds=5" in reasons["too_long"] and "empty" in reasons["empty_text"]
    for name in ("corrupt", "silent", "missing"):
        assert str(tmp_path / f"{name}.wav") in reasons[name]
        assert any(str(tmp_path / f"{name}.wav") in r.getMessage() for r in caplog.records)
    with pytest.raises(AudioError, match="corrupt.wav"):
        SpeechDataModule(Vocab(), ManifestCorpus(train=str(manifest)), on_bad_audio="error").setup()
    with pytest.raises(CorpusError, match="every one of the 3 utterances of the train split.*3 bad audio"):
        SpeechDataModule(Vocab(), _Listed(bad[:3])).setup()


# -------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["fsdd", "librivox", "espeak_ptb", "librispeech", "wsj_speech"])
def test_speech_configs_compose_and_build(name: str, tmp_path: Path, cache_dir: Path):
    overrides = [f"data={name}", f"paths.cache_dir={cache_dir}", "data.limit={train: 20, dev: 10, test: 5}"]
    if name == "wsj_speech":
        overrides.append("data.corpus.root=/ldc/wsj")
    cfg = compose_cfg(overrides, tmp_path)
    dm = hydra.utils.instantiate(cfg.data, vocab=Vocab())
    assert isinstance(dm, SpeechDataModule) and isinstance(dm.corpus, SpeechCorpus)
    assert isinstance(dm.features, LogMel) and dm.features.normalize and dm.spec_augment is None
    if name in ("fsdd", "librivox"):
        batch = next(iter(dm.test_dataloader()))
        assert batch["features"].shape[0] == 5 and dm.feature_dim == 80
        assert [len(dm.examples[s]) for s in ("train", "dev", "test")] == ([20, 10, 5] if name == "fsdd" else [0, 0, 5])
