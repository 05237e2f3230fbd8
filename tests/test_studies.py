"""The reference's studies (conf/experiment/) at size=smoke, end to end as a user runs them:
``python train.py -m experiment=<study> size=smoke`` trains every model, tests it, writes its
signatures and ends in the study report. Also: ``init_from`` starts from another run's weights.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from memsig.models.checkpoint import CheckpointError
from memsig.probe.signature import Signature
from memsig.resolvers import PROJECT_ROOT

from conftest import TINY_RUN, compose_cfg


def run_study(experiment: str, out: Path, multirun: bool = True, *overrides: str) -> Path:
    """Run ``train.py [-m] experiment=<experiment> size=smoke`` into ``out``; the run/sweep dir."""
    where = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        *(["-m"] if multirun else []),
        f"experiment={experiment}",
        "size=smoke",
        where,
        *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def jobs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def test_gru_shakespeare_signature_has_heatmap_and_forward_accuracy(tmp_path: Path, tiny_corpus: Path):
    run = run_study("gru_shakespeare_signature", tmp_path / "run", False)
    sig = Signature.load(run / "signatures" / "main.npz")
    assert sig.states == ["layer1.h"] and sig.forward_confusion is not None
    assert sig.accuracy[0, 0] > 2 * sig.majority_rate[0, 0]  # even 30 batches of training remember δ=1
    png = run / "signatures" / "main" / "heatmap_layer1.h.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert json.loads((run / "metrics.json").read_text())["signatures"]["main"] == str(run / "signatures" / "main.npz")
    base = Signature.load(run / "baseline.npz")  # beside the main signature: what the later symbols imply
    assert base.lags == sig.lags and (base.support[0] == sig.support[0]).all()
    assert (run / "signatures" / "main" / "lift_layer1.h.png").is_file()


def test_kernel_size_study_sweeps_the_papers_eight_models():
    sweep = OmegaConf.load(PROJECT_ROOT / "conf" / "experiment" / "kernel_size_study.yaml").hydra.sweeper.params
    assert (sweep["model.cell"], str(sweep["model.hidden_size"])) == ("gru,lstm", "80,160,320,640")


def test_kernel_size_study_reports_every_model(tmp_path: Path, tiny_corpus: Path):
    # the two smallest kernels of each cell: the path of all eight, in a fraction of the time
    sweep = run_study("kernel_size_study", tmp_path / "sweep", True, "model.hidden_size=80,160")
    models = read_csv(sweep / "report" / "models.csv")
    assert [m["model"] for m in models] == [f"{c}-{n}" for c in ("gru", "lstm") for n in (80, 160)]
    assert all(float(m["test ppl"]) > 1 for m in models)
    assert int(models[1]["params"]) > int(models[0]["params"])
    recall = read_csv(sweep / "report" / "recall.csv")
    assert [r["state"] for r in recall] == ["layer1.h"] * 2 + ["layer1.c"] * 2
    for name in ("marginal_recall.png", "side_by_side.png", "report.html", "report.md", "distances.csv"):
        assert (sweep / "report" / name).is_file(), name
    assert "gru-80" in (sweep / "report" / "report.html").read_text()


@pytest.mark.slow  # minutes: Mamba's CPU path; tests/models/test_hf.py trains and probes each family fast
def test_architecture_study_trains_and_probes_every_family(tmp_path: Path, tiny_corpus: Path):
    sweep = run_study("architecture_study", tmp_path / "sweep")
    families = ["lstm", "gru", "mamba", "rwkv", "xlstm", "griffin", "transformer"]
    models = read_csv(sweep / "report" / "models.csv")
    assert [m["model"] for m in models] == families
    assert all(float(m["test ppl"]) > 1 for m in models)
    params = {m["model"]: int(m["params"]) for m in models}
    assert all(0.6 < params[f] / params["lstm"] < 1.1 for f in families if f != "gru")  # matched parameters
    recall = read_csv(sweep / "report" / "recall.csv")  # one row per model: its top layer's state
    top = ["layer1.c", "layer1.h", "layer4.residual", "layer3.residual", "layer2.residual", "layer3.residual"]
    assert [(r["signature"], r["state"]) for r in recall] == list(zip(families, [*top, "layer2.residual"]))
    assert all(float(r["δ=1"]) > float(r["majority"]) for r in recall)
    for other in families[1:]:  # the first model against each other
        assert (sweep / "report" / f"difference_lstm_vs_{other}.png").is_file()


def test_depth_study_probes_every_layer_and_the_deep_decoder_control(tmp_path: Path, tiny_corpus: Path):
    sweep = run_study("depth_study", tmp_path / "sweep", True, "model.hidden_size=64")  # the path, not the size
    for job, cell in zip(("0", "1"), ("h", "c")):
        main = Signature.load(sweep / job / "signatures" / "main.npz")
        assert main.states == [f"layer{i}.{cell}" for i in range(1, 5)]
        deep = Signature.load(sweep / job / "signatures" / "deep_decoders.npz")
        assert deep.states == [f"layer3.{cell}", f"layer4.{cell}"]
        assert deep.meta["probe"]["features"] == 1024 > main.meta["probe"]["features"]  # the ridge variant
    recall = read_csv(sweep / "report" / "recall.csv")
    assert {r["signature"] for r in recall} == {"gru", "lstm", "gru [deep_decoders]", "lstm [deep_decoders]"}


def test_domain_adaptation_scores_all_three_on_wsj(tmp_path: Path, tiny_corpus: Path):
    sweep = run_study("domain_adaptation", tmp_path / "sweep")
    results = jobs(sweep)
    assert set(results) == {"source", "target", "adapted"}
    for r in results.values():
        assert r["metrics"]["eval/wsj/ppl"] > 1
        assert Signature.load(r["signatures"]["main"]).meta["data"]["corpus"]["_target_"] == "memsig.data.PTBCorpus"
    # the adapted model started from the source's weights: it fits WSJ better than the source
    assert results["adapted"]["metrics"]["eval/wsj/loss"] < results["source"]["metrics"]["eval/wsj/loss"]
    pairs = {(d["a"], d["b"]) for d in read_csv(sweep / "report" / "distances.csv")}
    assert pairs == {("source", "target"), ("source", "adapted"), ("target", "adapted")}
    assert (sweep / "report" / "difference_adapted_vs_source.png").is_file()


def test_factorized_domain_adaptation_adapts_bases_and_writes_per_basis_signatures(tmp_path: Path, tiny_corpus: Path):
    import torch

    sweep = run_study(
        "factorized_domain_adaptation",
        tmp_path / "sweep",
        True,
        "model.hidden_size=48",
        "signature.bases.summary.limit=6",
    )
    results = jobs(sweep)
    assert set(results) == {"source", "adapted_bases", "adapted", "target"}
    assert all(r["metrics"]["eval/wsj/ppl"] > 1 for r in results.values())
    # bases-only adaptation: every weight but the bases U, V is the source's; the λ standardisation
    # is refitted on WSJ (lambda_refit)
    weights = {
        k: torch.load(results[k]["best_checkpoint"], weights_only=True)["state_dict"]
        for k in ("source", "adapted_bases")
    }
    for name, value in weights["source"].items():
        same = torch.equal(value, weights["adapted_bases"][name])
        assert same != (name.startswith("net.bases.") or name in ("lambda_mean", "lambda_std")), name
    sigs = sweep / "source" / "signatures"
    base = Signature.load(sigs / "base.npz")
    basis = Signature.load(sigs / "basis_in.npz")
    assert basis.meta["basis"]["name"] == "in" and basis.meta["basis"]["segments"] > 0
    assert base.lags == basis.lags == Signature.load(sigs / "main.npz").lags
    assert (sigs / "bases" / "figure6.png").stat().st_size > 20_000
    rows = read_csv(sigs / "bases" / "departures.csv")
    assert len(rows) == 6 and [float(r["distance"]) for r in rows] == sorted(
        (float(r["distance"]) for r in rows), reverse=True
    )
    assert (sigs / "bases" / "departures.png").is_file()


def test_ngram_vs_gru_has_count_table_bound_and_difference_map(tmp_path: Path, tiny_corpus: Path):
    sweep = run_study("ngram_vs_gru", tmp_path / "sweep")
    ngram = next(r for r in jobs(sweep).values() if "model=ngram" in r["overrides"])
    assert 1 < ngram["metrics"]["test/ppl"] < 31
    probe, table = (Signature.load(ngram["signatures"][k]) for k in ("main", "count_table"))
    assert probe.accuracy[0, 0] > 0.9  # δ=1 lies inside the 5-gram's context
    assert (sweep / "report" / "difference_gru_vs_ngram.png").is_file()
    assert table.meta["probe"]["kind"] == "count_table" and table.lags == probe.lags


def test_init_from_starts_from_the_weights_of_another_run(trained_lm: dict, tmp_path: Path):
    from memsig.tasks.train import train

    source = trained_lm["dir"]
    cfg = compose_cfg([*TINY_RUN, f"init_from={source}", "train=false", "logger=none"], tmp_path / "again")
    result = train(cfg)
    assert np.isclose(result["metrics"]["test/loss"], trained_lm["result"]["metrics"]["test/loss"], rtol=1e-5)
    other = compose_cfg([*TINY_RUN, "model.hidden_size=32", f"init_from={source}"], tmp_path / "other")
    with pytest.raises(CheckpointError, match="hidden_size"):
        train(other)
