"""LAS on real (synthesized) speech: a tiny model overfits 8 utterances; train → probe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from omegaconf import OmegaConf

from memsig.data.speech import LogMel, ManifestCorpus, SpeechDataModule, read_manifest, write_manifest
from memsig.models.las import LAS
from memsig.probe.signature import GIVEN, Signature
from memsig.vocab import Vocab

from conftest import compose_cfg, quiet_trainer, require_system


def test_tiny_las_overfits_eight_utterances(espeak_corpus: dict[str, Path], tmp_path: Path, one_thread: None) -> None:
    """The real training path (bucketed batches, CTC + attention, greedy decoding) can fit 8
    spoken sentences: character error rate < 5 % on them."""
    utts = sorted(read_manifest(espeak_corpus["train"]), key=lambda u: u.duration)[:8]
    manifest = tmp_path / "eight.jsonl"
    write_manifest(manifest, utts)
    vocab = Vocab()
    dm = SpeechDataModule(
        vocab,
        ManifestCorpus(train=str(manifest), dev=str(manifest), test=str(manifest)),
        LogMel(n_mels=40, normalize=True),
        batch_seconds=60.0,
    )
    L.seed_everything(0)
    model = LAS(
        vocab,
        feature_size=40,
        listener_hidden=64,
        reductions=[2, 2, 2],
        embedding_size=32,
        speller_hidden=128,
        attention_size=64,
        listener_dropout=0.0,
        label_smoothing=0.0,
        lr=3e-3,
        warmup_steps=0,
        scheduler="none",
    )
    trainer = quiet_trainer(max_steps=250, limit_val_batches=0, gradient_clip_val=5.0)
    trainer.fit(model, datamodule=dm)
    cer = trainer.test(model, datamodule=dm, verbose=False)[0]["test/cer"]
    hyps = model.transcribe(*(dm.dataset("test")[0][k] for k in ("features", "feature_lengths")))
    assert cer < 0.05, f"CER {cer:.3f} after 250 steps; e.g. {hyps[0]!r} for {dm.dataset('test')[0]['texts'][0]!r}"


@pytest.fixture(scope="module")
def las_run(espeak_corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``python train.py experiment=las_espeak`` for a few steps on the small corpus, probed."""
    from memsig.tasks.train import train

    require_system("pocketsphinx-testdata")  # the run also evaluates on the LibriVox clips
    out = tmp_path_factory.mktemp("las_run")
    corpus = {"_target_": "memsig.data.speech.ManifestCorpus", **{s: str(p) for s, p in espeak_corpus.items()}}
    cfg = compose_cfg(
        [
            "experiment=las_espeak",
            "model.listener_hidden=32",
            "model.speller_hidden=48",
            "model.attention_size=24",
            "trainer.max_epochs=2",
            "+trainer.limit_val_batches=1",
            "evaluate_on.fsdd.limit={test: 12}",
            "signature.require=null",
            "signature.probe.max_train_batches=2",
            "logger=csv",
            "callbacks=model_checkpoint",
        ],
        out,
    )
    cfg.data.corpus = OmegaConf.create(corpus)
    return {"result": train(cfg), "dir": out}


def test_train_task_scores_speech_and_real_recordings(las_run: dict) -> None:
    metrics = las_run["result"]["metrics"]
    for key in ("test/cer", "test/wer", "test/ctc_cer", "eval/fsdd/cer", "eval/librivox/cer", "val/cer"):
        assert key in metrics and np.isfinite(metrics[key]), key
    saved = json.loads((las_run["dir"] / "metrics.json").read_text())
    assert saved["monitor"] == "val/cer"


def test_the_figure7_trio_is_probed_at_negative_and_positive_lags(las_run: dict) -> None:
    sig = Signature.load(las_run["result"]["signatures"]["main"])
    assert sig.real_states == ["listener1", "listener3", "speller.query"]
    assert min(sig.lags) < 0 < max(sig.lags)
    acc = np.asarray(sig.accuracy)
    assert np.isfinite(acc).all() and (acc >= 0).all() and (acc <= 1).all()


def test_probe_py_runs_the_mlp_probe_on_a_las_checkpoint(las_run: dict, tmp_path: Path) -> None:
    from memsig.tasks.probe import probe

    cfg = compose_cfg(
        [
            f"ckpt={las_run['dir']}",
            "probe.states=[listener2.bwd,speller1.h]",
            "probe.lags=[-2,1,3]",
            "probe.max_width=16",
            "probe.positions_per_batch=128",
            "probe.controls=[shuffled]",
            "trainer.max_epochs=1",
            "~callbacks.rich_progress_bar",
        ],
        tmp_path,
        config_name="probe",
    )
    probe(cfg)
    sig = Signature.load(tmp_path / "signature.npz")
    assert sig.real_states == ["listener2.bwd", "speller1.h"] and sig.lags == [-2, 1, 3]
    assert not any(s.startswith(GIVEN) for s in sig.states)  # probe=default's baseline is for text only
    assert "backward direction" in sig.meta["state_notes"]["listener2.bwd"]
    assert sig.meta["data"]["corpus"]["_target_"].endswith("ManifestCorpus")  # the train run's data
    assert (tmp_path / "figures" / "heatmap_listener2.bwd.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "states_side_by_side.png").stat().st_size > 10_000


def test_a_model_that_misses_its_cer_bar_is_not_probed(espeak_corpus: dict[str, Path], tmp_path: Path) -> None:
    from memsig.tasks.train import quality_gate

    cfg = compose_cfg(["experiment=las_espeak"], tmp_path)
    assert quality_gate(cfg, {"test/cer": 0.39}) is None
    assert "misses its bar" in quality_gate(cfg, {"test/cer": 0.85})
    assert "misses its bar" in quality_gate(cfg, {})
