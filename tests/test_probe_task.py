"""probe.py end to end on the session's tiny LM: files, figures, W&B artifact, resume, compare."""

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from omegaconf import OmegaConf

from memsig.analysis.state_gradients import GradientMemory
from memsig.probe.signature import Signature
from memsig.report import Study, write_static
from memsig.tasks.probe import probe
from memsig.tasks.rundir import RunDirError

from conftest import compose_cfg, wandb_log, wandb_media_keys

SMALL = [
    "probe.lags=[1,2,4]",
    "probe.max_width=32",
    "probe.batch_positions=256",
    "probe.controls=[shuffled]",
    "probe.max_steps=40",
    "probe.eval_every=20",
    "~callbacks.rich_progress_bar",
]


@pytest.fixture(scope="module")
def probe_run(trained_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_run")
    cfg = compose_cfg(
        [
            f"ckpt={trained_lm['dir']}",
            *SMALL,
            "noise_floor_seed=1",
            "confusion_lags=[2]",
            "gradients=default",
            "gradients.lags=4",
            "gradients.positions=96",
            "gradients.batch=48",
        ],
        out,
        config_name="probe",
    )
    return {"result": probe(cfg), "dir": out, "cfg": cfg}


def test_probe_writes_signature_figures_and_summary(probe_run, trained_lm):
    out = probe_run["dir"]
    sig = Signature.load(out / "signature.npz")
    assert sig.real_states == ["layer1.c"] and sig.lags == [1, 2, 4]
    assert sig.states == ["layer1.c", "shuffled:layer1.c", "given:layer1.c", "given:shuffled:layer1.c", "backward"]
    assert sig.meta["checkpoint"] == trained_lm["result"]["best_checkpoint"]  # a run dir resolves to its best
    assert len(sig.meta["checkpoint_sha256"]) == 64 and sig.meta["split"] == "test"
    assert sig.meta["data"]["corpus"]["name"] == "tinyshakespeare"  # data config taken from the train run
    png = imread(out / "figures" / "heatmap_layer1.c.png")
    assert png.shape[0] > 400 and png.shape[1] > 600 and png.std() > 0.05
    assert (out / "figures" / "marginal_recall.svg").stat().st_size > 10_000
    assert (out / "figures" / "confusion_layer1.c_lag2.png").is_file()
    page = (out / "report.html").read_text()  # the interactive page, with the state gradients
    assert len(page) > 1_000_000 and "layer1.c" in page and "Spearman" in page
    summary = json.loads((out / "probe.json").read_text())
    assert summary["accuracy"]["layer1.c"] == [round(float(a), 4) for a in sig.accuracy[0]]


def test_probe_draws_the_backward_context_baseline_and_the_lift(probe_run):
    """Beside a text signature: what the later symbols alone imply, on the same test positions."""
    out = probe_run["dir"]
    sig, base = Signature.load(out / "signature.npz"), Signature.load(out / "baseline.npz")
    assert base.states == ["backward"] and base.lags == sig.lags
    np.testing.assert_array_equal(base.support[0], sig.support[0])  # the same positions and targets
    assert base.meta["probe"]["later_symbols"] == [1, 2, 4]  # δ later symbols help at these lags
    assert (base.accuracy[0] > base.majority_rate[0]).all() and sig.accuracy[0, 0] > base.accuracy[0, 0]
    assert (out / "figures" / "lift_layer1.c.png").stat().st_size > 10_000
    assert json.loads((out / "probe.json").read_text())["baseline"] == str(out / "baseline.npz")


def test_probe_reports_memory_beyond_inference_on_the_baselines_positions(probe_run):
    """The signature carries the baseline scored inside the probe (the same as baseline.npz) and
    the conditional memory of each state; probe.json has it per lag and summed."""
    out = probe_run["dir"]
    sig, base = Signature.load(out / "signature.npz"), Signature.load(out / "baseline.npz")
    np.testing.assert_array_equal(sig.confusion[sig.index("backward")], base.confusion[0] * sig.seeds)
    bits = json.loads((out / "probe.json").read_text())["conditional_bits"]
    assert set(bits) == {"layer1.c", "shuffled:layer1.c"}
    assert bits["layer1.c"]["bits"][0] > 0.2  # x_{t-1} is in the state, beyond inference (after 40 steps)
    assert bits["layer1.c"]["total"] == pytest.approx(sum(bits["layer1.c"]["bits"]), abs=1e-3)
    assert imread(out / "figures" / "memory_beyond_inference.png").std() > 0.05  # the static figure
    assert "Memory beyond inference</h3>" in (out / "report.html").read_text()  # and its section of the page


def test_probe_writes_state_gradients_and_their_correlation_with_recall(probe_run):
    out = probe_run["dir"]
    grad = GradientMemory.load(out / "gradients.npz")
    assert grad.states == ["layer1.c"] and grad.lags == [1, 2, 3, 4] and grad.support[0, 0].sum() == 96
    assert grad.meta["checkpoint_sha256"] == Signature.load(out / "signature.npz").meta["checkpoint_sha256"]
    assert grad.norm[0, 0] > grad.norm[0, -1] > 0  # a trained LM's gradient memory fades with the lag
    corr = json.loads((out / "probe.json").read_text())["gradient_correlation"]["layer1.c"]
    assert set(corr["per_lag"]) == {"1", "2", "4"} and -1 <= corr["across_lags"] <= 1
    assert imread(out / "figures" / "gradients_layer1_c.png").std() > 0.05


def test_noise_floor_is_measured(probe_run):
    floor = probe_run["result"]["noise_floor"]["layer1.c"]
    d, lo, hi = floor
    assert 0 <= lo <= hi and 0 < d < 0.2
    assert Signature.load(probe_run["dir"] / "signature_seed1.npz").meta["probe"]["seed"] == 1


def test_probe_resumes_from_its_checkpoint(probe_run, tmp_path):
    last = probe_run["dir"] / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert any(k.endswith("best_loss") and torch.isfinite(v).all() for k, v in saved["state_dict"].items())
    cfg = compose_cfg(
        [f"ckpt={probe_run['cfg'].ckpt}", *SMALL, f"probe_ckpt={last}", "probe.max_steps=80"],
        tmp_path,
        config_name="probe",
    )
    probe(cfg)
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 40 and resumed["global_step"] == 2 * saved["global_step"]


def test_wandb_offline_run_holds_the_signature_artifact(trained_lm, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg([f"ckpt={trained_lm['dir']}", *SMALL, "logger=wandb"], tmp_path, config_name="probe")
    probe(cfg)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert "signature/heatmap_layer1.c" in wandb_media_keys(run)
    log = wandb_log(run, b"signature.npz", b"figures/heatmap_layer1.c.png")
    assert b"signature.npz" in log and b"figures/heatmap_layer1.c.png" in log  # the artifact's files


def test_compare_draws_and_measures(probe_run, tmp_path):
    out = probe_run["dir"]
    study = Study.from_signatures([out / "signature.npz", out / "signature_seed1.npz"], ["seed0", "seed1"])
    write_static(study, tmp_path)
    ((d, _, _),) = study.distances.values()
    assert np.isclose(d, probe_run["result"]["noise_floor"]["layer1.c"][0])
    assert {p.name for p in tmp_path.iterdir()} >= {
        "side_by_side.png",
        "marginal_recall.png",
        "difference_seed0_vs_seed1.png",
        "distances.csv",
    }


def test_missing_data_config_is_named(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    cfg = compose_cfg([f"ckpt={ckpt}", *SMALL], tmp_path, config_name="probe")
    with pytest.raises(Exception, match="cannot be read|no run config"):
        probe(cfg)


def test_a_second_probe_into_a_finished_probe_dir_is_refused(probe_run):
    before = {p: p.stat().st_mtime_ns for p in probe_run["dir"].rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="holds a finished run \\(probe.json\\)"):
        probe(compose_cfg([f"ckpt={probe_run['cfg'].ckpt}", *SMALL], probe_run["dir"], config_name="probe"))
    assert {p: p.stat().st_mtime_ns for p in probe_run["dir"].rglob("*") if p.is_file()} == before


def test_the_run_data_is_changed_by_key_and_the_vocab_is_the_checkpoints(trained_lm, tmp_path):
    short = compose_cfg(
        [f"ckpt={trained_lm['dir']}", *SMALL, "probe.max_steps=20", "data.max_chars=60000"],
        tmp_path / "short",
        config_name="probe",
    )
    sig = Signature.load(probe(short)["signature"])
    run_data = OmegaConf.to_container(trained_lm["cfg"].data, resolve=True)
    assert sig.meta["data"] == {**run_data, "max_chars": 60000} and run_data["max_chars"] != 60000
    vocab = compose_cfg(
        [f"ckpt={trained_lm['dir']}", *SMALL, "+vocab.extra_symbols=xy"], tmp_path / "vocab", config_name="probe"
    )
    with pytest.raises(ValueError, match="the symbol set comes from the checkpoint"):
        probe(vocab)
