"""The quick (ridge) signature: exact recall of a delay line, exact per-lag moments."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memsig.data.corpora import TextCorpus
from memsig.data.text import TextDataModule
from memsig.models.char_lm import CharLM
from memsig.models.delay_line import DelayLine
from memsig.probe.controls import ControlledSource
from memsig.probe.quick import quick_signature, ridge_weights, train_moments, vector_scaling
from memsig.probe.targets import LeftContext, lag_targets
from memsig.vocab import Vocab

from conftest import TINY, RandomSymbols

LAGS = [1, 2, 3, 5, 6]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def datamodule(**kw) -> TextDataModule:
    assert TINY.is_file(), f"{TINY} is missing (set MEMSIG_DATA_DIR)"
    args = {"batch_size": 8, "seq_len": 32, "max_chars": 30000, **kw}
    return TextDataModule(TextCorpus(str(TINY)), Vocab(), **args)


@pytest.fixture(scope="module")
def dm() -> TextDataModule:
    return datamodule()


@pytest.fixture(scope="module")
def delay_sig():
    """On i.i.d. symbols, so nothing older than the window is predictable from the window."""
    dm = TextDataModule(RandomSymbols(), Vocab(), batch_size=16, seq_len=64)
    return dm, quick_signature(DelayLine(Vocab(), k=3), dm, lags=LAGS)


def valid_counts(dm, split, lags, common=False):
    """``[K]`` positions with a target, counted straight from the batches."""
    data, ctx, n = dm.dataset(split), LeftContext(max(lags)), torch.zeros(len(lags), dtype=torch.long)
    for b in (data[i] for i in range(len(data))):
        _, valid = lag_targets(ctx.extend(split, b["inputs"], b["carry"]), b["history"], b["mask"], lags, common)
        n += valid.sum((0, 1))
    return n.numpy()


def test_delay_line_recalls_exactly_its_window_and_nothing_older(delay_sig):
    _, delay_sig = delay_sig
    acc, majority = delay_sig.accuracy[0], delay_sig.majority_rate[0]
    assert (acc[:3] >= 0.99).all(), acc
    assert (acc[3:] < majority[3:] + 0.05).all(), (acc, majority)
    assert (delay_sig.ce_bits[0, :3] < 0.05).all() and np.isfinite(delay_sig.ce_bits).all()
    probe = delay_sig.meta["probe"]
    assert probe["kind"] == "ridge" and len(probe["ridge"]["delay"]) == len(LAGS)
    assert set(probe["ridge"]["delay"]) <= set(probe["ridge_grid"])
    assert delay_sig.forward_confusion is None  # a delay line predicts nothing


def test_support_counts_are_the_valid_positions(dm, delay_sig):
    random_dm, delay_sig = delay_sig
    np.testing.assert_array_equal(delay_sig.support.sum(-1)[0], valid_counts(random_dm, "test", LAGS))
    common = quick_signature(DelayLine(Vocab(), k=3), dm, lags=[1, 4], max_train_batches=4, common_positions=True)
    counts = valid_counts(dm, "test", [1, 4], common=True)
    np.testing.assert_array_equal(common.support.sum(-1)[0], counts)
    assert counts[0] == counts[1]


@pytest.mark.parametrize("regime", ["stream", "segment"])
def test_gram_corrections_equal_per_lag_grams(regime):
    dm, lags, vocab = datamodule(regime=regime, max_chars=4000), [-2, 0, 1, 3], Vocab()
    moments, phi = train_moments(DelayLine(vocab, k=2), dm, lags=lags, max_batches=3, features=16)
    moments, phi = moments["delay"], phi["delay"]
    src, ctx, data = DelayLine(vocab, k=2), LeftContext(3), dm.dataset("train")
    grams, cross = 0, 0
    for i in range(3):
        sb = src.states(data[i])
        y, v = lag_targets(ctx.extend("t", sb.symbols, data[i]["carry"]), sb.history, sb.mask, lags)
        x = phi(sb.states["delay"].flatten(0, 1)).double()  # features of every position (none sampled out)
        y, v = y.flatten(0, 1), v.flatten(0, 1)
        grams = grams + torch.stack([x[v[:, k]].T @ x[v[:, k]] for k in range(len(lags))])
        cross = cross + torch.stack(
            [x[v[:, k]].T @ F.one_hot(y[v[:, k], k], len(vocab)).double() for k in range(len(lags))]
        )
    assert (~v).any()  # the case has excluded positions
    for got, want in zip(moments, (grams, cross)):  # float32 products per batch: exact up to their rounding
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * want.abs().max().item())


def test_ridge_weights_solve_the_bias_free_penalty():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 6, generator=gen, dtype=torch.float64) * 3 + 1, torch.ones(300, 1)], -1)
    y = F.one_hot(torch.randint(0, 4, (300,), generator=gen), 4).double()
    g, xy = x.T @ x, x.T @ y
    w = ridge_weights(g[None], xy[None], [1e-3, 1.0])[0]
    centred = x[:, :-1] - x[:, :-1].mean(0)
    scale = (centred.T @ centred).trace() / 6
    for j, lam in enumerate([1e-3, 1.0]):
        penalty = torch.diag(torch.tensor([1.0] * 6 + [0.0], dtype=torch.float64)) * lam * scale
        torch.testing.assert_close(w[j], torch.linalg.solve(g + penalty, xy), rtol=0, atol=1e-9)


def test_vector_scaling_recovers_the_scales_and_offsets_that_made_the_labels():
    """Labels drawn from softmax(a ⊙ z + b): the fit finds a and b (up to the offsets' common shift)."""
    gen = torch.Generator().manual_seed(0)
    k, n, c = 2, 20000, 4
    a = torch.tensor([[3.0, 1.0, 6.0, 2.0], [0.5, 4.0, 4.0, 8.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 1.5, -2.0, 0.5], [1.0, -1.0, 0.0, -3.0]], dtype=torch.float64)
    z = torch.rand(k, n, c, generator=gen, dtype=torch.float64) * 2
    y = torch.multinomial(torch.softmax(a[:, None] * z + b[:, None], -1).view(-1, c), 1, generator=gen).view(k, n)
    v = torch.ones(k, n, dtype=torch.bool)
    v[1, n // 2 :] = False  # invalid positions carry no weight: lag 2 learns from the first half only
    y[1, n // 2 :] = 0
    fa, fb = vector_scaling(z.float(), y, v)
    torch.testing.assert_close(fa, a, rtol=0, atol=0.35)
    torch.testing.assert_close(fb - fb.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True), rtol=0, atol=0.3)


def test_calibration_lifts_the_recall_of_rare_symbols(dm):
    """Least squares under-predicts rare symbols; per-symbol scaling gives them back recall and
    lowers the cross-entropy, on a tiny LM's states where the raw ridge scores are far from calibrated."""
    torch.manual_seed(0)
    lm = CharLM(Vocab(), hidden_size=32, embedding_size=8)
    raw, cal = (
        quick_signature(lm, dm, lags=[1, 2], features=64, max_train_batches=10, calibrate=flag)
        for flag in (False, True)
    )
    assert cal.meta["probe"]["calibration_positions"] > 500 and raw.meta["probe"]["calibration_positions"] == 0
    frequent = np.argsort(-raw.prior)[:5]
    rare = [i for i in range(len(raw.prior)) if i not in frequent and raw.support[0, 0, i] >= 50]
    gain = np.mean(cal.recall[0, 0, rare]) - np.mean(raw.recall[0, 0, rare])
    assert gain > 0.05, (gain, cal.recall[0, 0], raw.recall[0, 0])
    assert (cal.ce_bits[0] < raw.ce_bits[0]).all(), (cal.ce_bits, raw.ce_bits)


def test_controls_a_delay_line_keeps_without_training_and_shuffling_destroys(delay_sig):
    """A delay line's memory is its architecture: the random copy recalls exactly as well; shuffled
    states sit at the majority rate. Everything else equals the run without controls."""
    random_dm, plain = delay_sig
    sig = quick_signature(DelayLine(Vocab(), k=3), random_dm, lags=LAGS, controls=["random", "shuffled"])
    assert sig.states == ["delay", "random:delay", "shuffled:delay"] and sig.real_states == ["delay"]
    np.testing.assert_array_equal(sig.confusion[0], plain.confusion[0])
    np.testing.assert_array_equal(sig.confusion[1], plain.confusion[0])
    majority = sig.majority_rate[2]
    assert (sig.accuracy[2] < majority + 0.05).all(), (sig.accuracy[2], majority)
    assert sig.meta["probe"]["controls"] == ["random", "shuffled"]
    with pytest.raises(ValueError, match="probe.controls may hold random and shuffled"):
        quick_signature(DelayLine(Vocab(), k=3), random_dm, lags=LAGS, controls=["permuted"])


def test_shuffled_control_permutes_real_positions_only(dm):
    lm = CharLM(Vocab(), hidden_size=8, embedding_size=4)
    source = ControlledSource(lm, ["shuffled"], seed=0)
    batch = dict(dm.dataset("test")[0])
    batch["mask"] = batch["mask"].clone()
    batch["mask"][0, -5:] = False  # a padded row end
    sb = source.states(batch)
    real, shuffled, mask = sb.states["layer1.c"], sb.states["shuffled:layer1.c"], sb.mask
    assert (~mask).any() and torch.equal(shuffled[~mask], real[~mask])  # padding stays where it is
    assert not torch.equal(shuffled[mask], real[mask])
    order = lambda x: x[torch.argsort(x[:, 0])]  # noqa: E731 (the same rows in any order)
    torch.testing.assert_close(order(shuffled[mask]), order(real[mask]), rtol=0, atol=0)
    assert source.state_dims["shuffled:layer1.c"] == lm.state_dims["layer1.c"]


def test_runs_on_a_tiny_char_lm(dm):
    lm = CharLM(Vocab(), hidden_size=16, embedding_size=8)
    sig = quick_signature(lm, dm, lags=[1, 2, 5], max_train_batches=10)
    assert sig.states == ["layer1.c"]
    assert np.isfinite(sig.accuracy).all() and np.isfinite(sig.ce_bits).all()
    assert sig.forward_confusion is not None and sig.forward_confusion.sum() > 0
