"""A signature one can quote: converged decoders, seed spread, block-bootstrap intervals, cached states."""

from __future__ import annotations

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import memsig
from memsig.models.checkpoint import load_model
from memsig.models.delay_line import DelayLine
from memsig.probe import MLPProbe
from memsig.probe.cache import cached_split
from memsig.probe.multihead import unconverged_heads
from memsig.probe.signature import Signature, block_bootstrap_variance, wilson
from memsig.vocab import Vocab

VOCAB = Vocab()
LAGS = [1, 2, 4, 8]
OPTIONS = {"lags": LAGS, "width": 64, "controls": [], "eval_every": 50}
FAST = {**OPTIONS, "progress": False}


@pytest.fixture(scope="module")
def tiny(trained_lm):
    cfg = trained_lm["cfg"]
    dm = hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))
    return load_model(trained_lm["result"]["best_checkpoint"]), dm


def _probe(model, dm, **kwargs):
    """The default stopping rule (patience, relative improvement, one learning-rate drop)."""
    return memsig.probe(model, dm, **{**FAST, **kwargs})


def quiet(callbacks: list[L.Callback]):
    """A trainer factory for ``MLPProbe(trainer=...)``: no logger or progress bar."""
    return lambda settings: L.Trainer(
        **settings, logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks
    )


@pytest.fixture(scope="module")
def converged_run(tiny, one_thread, tmp_path_factory):
    """The default stopping rule on the tiny LM, with the probe's checkpoint after every dev check."""
    folder = tmp_path_factory.mktemp("converged")
    last = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, monitor=None)
    sig = MLPProbe(trainer=quiet([last]), **OPTIONS).fit(*tiny, progress=False)
    return sig, folder / "last.ckpt"


@pytest.fixture(scope="module")
def converged(converged_run):
    return converged_run[0]


def test_continuing_a_converged_probe_for_twice_its_steps_moves_recall_by_less_than_0_005(
    tiny, converged_run, tmp_path, one_thread
):
    """The converged probe, reopened from its checkpoint (heads, best weights, learning rates,
    optimizer, position in the data), trained on with the stopping rule off for twice the steps
    it took, still recalls every lag within 0.005."""
    converged, ckpt = converged_run
    record = converged.meta["convergence"]["layer1.c@1.0#0"]
    assert all(record["converged"]) and not unconverged_heads(converged)
    state = torch.load(ckpt, weights_only=False)
    taken = state["global_step"]
    for key, value in state["state_dict"].items():
        if key.endswith(".converged"):
            value.zero_()  # every head trains again
    torch.save(state, tmp_path / "reopened.ckpt")
    longer = MLPProbe(trainer=quiet([]), **{**OPTIONS, "patience": 10**6, "max_steps": 3 * taken}).fit(
        *tiny, progress=False, ckpt_path=str(tmp_path / "reopened.ckpt")
    )
    steps = longer.meta["convergence"]["layer1.c@1.0#0"]["steps"]
    assert [s - before for s, before in zip(steps, record["steps"])] == [2 * taken] * len(LAGS)
    moved = np.abs(longer.accuracy[0] - converged.accuracy[0])
    assert moved.max() < 0.005, dict(zip(LAGS, moved))


def test_long_lags_converge_first_and_stop_costing(converged):
    steps = converged.meta["convergence"]["layer1.c@1.0#0"]["steps"]
    assert steps[-1] < steps[0], steps  # lag 8 reaches its (near-prior) best long before lag 1


def test_float16_cache_gives_the_float32_signature(tiny, one_thread):
    """The same probe for the same steps (the stopping rule off: a rounding difference must not
    change when a head stops) from float16 and from float32 states."""
    fixed = {"patience": 10**6, "max_steps": 1500}
    half, full = (_probe(*tiny, cache_dtype=dtype, **fixed) for dtype in ("float16", "float32"))
    assert np.abs(full.accuracy - half.accuracy).max() < 0.005, full.accuracy - half.accuracy


def test_states_are_cached_once_and_reused(tiny, tmp_path):
    model, dm = tiny
    first = cached_split(model, dm, "dev", ["layer1.c"], LAGS, root=tmp_path)
    again = cached_split(model, dm, "dev", ["layer1.c"], LAGS, root=tmp_path)
    assert first.folder == again.folder and len(list(tmp_path.iterdir())) == 1
    other = cached_split(model, dm, "dev", ["layer1.c"], [1, 2], root=tmp_path)  # other lags: another key
    assert other.folder != first.folder
    n = int(sum(int(v) for v in first.labels(slice(None))[1].any(1)))
    assert len(first) == n and first.states["layer1.c"].dtype == np.float16
    x = first.features("layer1.c", np.arange(5))
    assert x.dtype == torch.float32 and x.shape == (5, model.state_dims["layer1.c"])


def test_seed_spread_is_zero_for_an_exact_decoder(random_dm, one_thread):
    sig = memsig.probe(
        DelayLine(VOCAB, 3),
        random_dm,
        lags=[0, 1, 2, 3],
        width=64,
        lr=0.01,
        seeds=3,
        controls=[],
        eval_every=20,
        progress=False,
    )
    per_seed = sig.seed_accuracy[:, 0]  # [R, K]
    assert per_seed.shape == (3, 4) and np.all(per_seed == 1.0)
    assert np.ptp(per_seed, axis=0).max() == 0.0
    lo, hi = sig.accuracy_ci()
    assert np.all(lo[0] == 1.0) and np.all(hi[0] == 1.0)  # nothing to spread over: an interval of width 0


def test_streamed_and_cached_probes_agree_on_a_delay_line(random_dm, one_thread):
    kwargs = {"lags": [1, 3, 4], "width": 64, "lr": 0.01, "controls": [], "eval_every": 20, "progress": False}
    cached = memsig.probe(DelayLine(VOCAB, 3), random_dm, **kwargs)
    streamed = memsig.probe(DelayLine(VOCAB, 3), random_dm, cache=False, positions_per_batch=None, **kwargs)
    np.testing.assert_array_equal(cached.support, streamed.support)
    assert np.abs(cached.accuracy - streamed.accuracy).max() < 0.01


def _dependent_stream(rng: np.random.Generator, n: int, stay: float) -> np.ndarray:
    """A 0/1 Markov chain with mean 0.5 whose runs last 1/(1-stay) steps on average."""
    flips = rng.random(n) > stay
    return (np.cumsum(flips) + rng.integers(2)) % 2


def test_block_bootstrap_covers_the_truth_at_its_nominal_rate():
    """95 % intervals over a dependent stream (runs of ~20) cover the true mean ~95 % of the time;
    Wilson intervals, which take the positions as independent, cover far less."""
    rng = np.random.default_rng(0)
    blocks, block_len, trials = 60, 256, 300
    covered = wilson_covered = 0
    for trial in range(trials):
        hits = _dependent_stream(rng, blocks * block_len, stay=0.95).reshape(blocks, block_len)
        block_correct = hits.sum(1).reshape(1, blocks, 1, 1, 1)
        block_support = np.full((blocks, 1, 1, 1), block_len)
        cells, _ = block_bootstrap_variance(block_correct, block_support, n_boot=400, seed=trial)
        mean = hits.mean()
        half = 1.96 * np.sqrt(cells.item())
        covered += abs(mean - 0.5) <= half
        lo, hi = wilson(np.array(hits.sum()), np.array(hits.size))
        wilson_covered += lo <= 0.5 <= hi
    assert 0.90 <= covered / trials <= 0.99, covered / trials
    assert wilson_covered / trials < 0.6, wilson_covered / trials


def test_intervals_combine_seed_spread_and_test_sampling():
    """Two seeds that disagree widen the interval beyond either seed's bootstrap alone."""
    rng = np.random.default_rng(1)
    support = np.full((40, 1, 1, 2), 100)
    first = rng.binomial(100, 0.6, size=(40, 1, 1, 2))
    second = rng.binomial(100, 0.8, size=(40, 1, 1, 2))
    both, _ = block_bootstrap_variance(np.stack([first, second]), support)
    alone, _ = block_bootstrap_variance(first[None], support)
    between = np.var([first.sum(0) / 4000, second.sum(0) / 4000], axis=0, ddof=1)
    assert np.all(both > alone) and np.all(both >= between.reshape(both.shape))


def test_signature_with_seeds_and_blocks_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    support = rng.integers(20, 40, size=(10, 1, 2, 3))
    correct = np.stack([rng.binomial(support, 0.7) for _ in range(2)])
    confusion = np.zeros((1, 2, 3, 3), dtype=np.int64)
    for c in range(3):
        confusion[0, :, c, c] = correct[..., c].sum((0, 1))[0]
        confusion[0, :, c, (c + 1) % 3] = 2 * support[..., c].sum(0)[0] - correct[..., c].sum((0, 1))[0]
    sig = Signature(
        ["s"],
        [1, 2],
        ["a", "b", "c"],
        confusion,
        np.zeros((1, 2)),
        np.full(3, 1 / 3),
        seeds=2,
        block_correct=correct,
        block_support=support,
        min_support=1,
    )
    np.testing.assert_array_equal(sig.support, support.sum(0))
    np.testing.assert_allclose(sig.recall, correct.sum((0, 1)) / (2 * support.sum(0)))
    back = Signature.load(sig.save(tmp_path / "sig.npz"))
    assert back == sig
    lo, hi = back.recall_ci()
    assert np.all(lo <= back.recall) and np.all(back.recall <= hi) and np.all(hi - lo > 0)
