"""Lags the data cannot give, lags that are not integers, and lags no test position has: named
before any state is computed, or NaN in the signature — never a silent 0 or a huge allocation."""

from __future__ import annotations

import hydra
import numpy as np
import pytest

from memsig.models.delay_line import DelayLine
from memsig.plots import marginal_curves, signature_heatmap
from memsig.probe import MLPProbe, RidgeProbe
from memsig.probe.quick import quick_signature, ridge_bytes
from memsig.probe.signature import Signature
from memsig.probe.targets import lag_reach, resolve_probe
from memsig.vocab import Vocab

from conftest import compose_cfg

VOCAB = Vocab()
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


class Unread(DelayLine):
    """A delay line that fails the test if any state is computed: the checks must come first."""

    def states(self, batch):
        raise AssertionError("states were computed before the lags were checked")


def test_the_reach_of_each_split_is_read_from_its_batches(random_dm):
    """RandomSymbols in 16 streams of 64-symbol windows: 40000 / 16 = 2500 symbols per training
    stream (inputs 0 … 2498), 8000 / 16 = 500 per dev/test stream (inputs 0 … 498)."""
    assert lag_reach(random_dm, "train") == (2498, 63)
    assert lag_reach(random_dm, "test") == (498, 63)


@pytest.mark.parametrize("probe", [MLPProbe, RidgeProbe])
@pytest.mark.parametrize(
    ("lag", "message"),
    [
        (
            100000,
            r"lag 100000 reaches further back than any position of the dev split has history \(at most 498 "
            r"symbols.*the longest usable lag is 498: drop the longer lags.*data\.batch_size",
        ),
        (
            -64,
            r"lag -64 looks further ahead than any window of the train split holds \(at most 63 symbols.*"
            r"the most negative usable lag is -63.*data\.seq_len",
        ),
    ],
)
def test_a_lag_beyond_the_data_is_named_before_any_state_is_computed(random_dm, probe, lag, message):
    with pytest.raises(ValueError, match=message):
        probe(lags=[1, lag]).fit(Unread(VOCAB, k=3), random_dm, progress=False)


@pytest.mark.parametrize(
    ("lags", "message"),
    [
        ("abc", r"probe\.lags must be a list of integers; got 'abc': e\.g\. 'probe\.lags=\[1,2,3\]'"),
        (5, r"probe\.lags must be a list of integers; got 5: e\.g\. 'probe\.lags=\[1,2,3\]'"),
        ([1, 2.5], r"probe\.lags must be a list of integers; 2\.5 in \[1, 2\.5\] is not"),
        ([], r"probe\.lags must be distinct and non-empty"),
    ],
)
def test_lags_that_are_not_a_list_of_integers_are_named_when_the_probe_is_built(lags, message):
    for probe in (MLPProbe, RidgeProbe):
        with pytest.raises(ValueError, match=message):
            probe(lags=lags)
    with pytest.raises(ValueError, match=message):
        resolve_probe(DelayLine(VOCAB, k=1), None, lags)


@pytest.mark.parametrize(("override", "shown"), [("probe.lags=abc", "'abc'"), ("probe.lags=5", "5")])
def test_hydra_overrides_that_are_not_lists_are_named(tmp_path, override, shown):
    """Hydra passes ``probe.lags=abc`` as a string and ``probe.lags=5`` as an integer."""
    for preset in ("default", "quick"):
        cfg = compose_cfg(["ckpt=unused", f"probe={preset}", override], tmp_path / preset, "probe")
        with pytest.raises(Exception, match=rf"probe\.lags must be a list of integers; got {shown}"):
            hydra.utils.instantiate(cfg.probe)


def test_a_lag_without_test_positions_is_nan_not_zero(random_dm, tmp_path):
    """Lag 100 is within every split's streams, but the first test window (the only one read)
    has 64 symbols of history at most: no test position, so no estimate."""
    sig = quick_signature(DelayLine(VOCAB, k=3), random_dm, lags=[1, 100], features=16, max_eval_batches=1)
    assert sig.support[0, 0].sum() > 0 and sig.support[0, 1].sum() == 0
    assert sig.accuracy[0, 0] > 0.99 and np.isnan(sig.accuracy[0, 1])
    for marginal in (sig.ce_bits, sig.info_bits, sig.majority_rate, sig.prior_rate, sig.seed_accuracy[0]):
        assert np.isfinite(marginal[0, 0]) and np.isnan(marginal[0, 1])
    assert np.isnan(sig.recall[0, 1]).all() and np.isnan(np.stack(sig.accuracy_ci())[:, 0, 1]).all()
    assert sig.table().splitlines()[-1].split()[:2] == ["100", "nan"]
    assert Signature.load(sig.save(tmp_path / "sig.npz")) == sig
    signature_heatmap(sig, "delay")  # NaN cells and marginals draw (grey), they do not fail
    marginal_curves(sig)


def test_the_ridge_preview_sizes_its_moments_before_allocating(random_dm):
    """The moments grow with the features and the number of lags, never with a lag's size; too
    many for the machine are named with their size and the fix, before any state is computed."""
    assert ridge_bytes([100], [1, 100000], 27, 6) == ridge_bytes([100], [1, 2], 27, 6)
    assert ridge_bytes([100], [1, 2, 3], 27, 6) > ridge_bytes([100], [1, 2], 27, 6)
    with pytest.raises(MemoryError, match=r"needs about [\d.]+ GiB .* more than the [\d.]+ GiB free.*probe\.features"):
        RidgeProbe(lags=[1, 2], features=10**6).fit(Unread(VOCAB, k=3), random_dm)
