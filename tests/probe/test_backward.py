"""The backward-context baseline: what the later symbols alone imply about x_{t-δ} (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from memsig.data.corpora import Corpus, Splits, TextCorpus
from memsig.data.text import TextDataModule
from memsig.models.delay_line import DelayLine
from memsig.probe import MLPProbe
from memsig.probe.backward import backward_baseline
from memsig.vocab import Vocab

from conftest import TINY

VOCAB = Vocab()
LAGS = [-1, 0, 1, 2, 3, 5]


class Periodic(Corpus):
    """``abcdefg`` repeated: every symbol is implied by the one after it."""

    name = "periodic"

    def load(self) -> Splits:
        return Splits(["abcdefg" * 3000], ["abcdefg" * 300], ["abcdefg" * 300])


def test_iid_text_gives_the_prior_at_every_lag(random_dm):
    """Nothing about an i.i.d. symbol is implied by its neighbours: recall is the majority rate and
    cross-entropy the prior's entropy (within sampling), whatever the lag."""
    sig = backward_baseline(random_dm, LAGS, order=4)
    majority = sig.majority_rate[0]
    np.testing.assert_allclose(sig.accuracy[0], majority, atol=0.015)
    entropy = -(sig.prior[sig.prior > 0] * np.log2(sig.prior[sig.prior > 0])).sum()
    np.testing.assert_allclose(sig.ce_bits[0, 2:], entropy, atol=0.05)  # δ ≥ 1: the n-gram, backed off


def test_a_periodic_text_is_fully_implied_from_one_later_symbol():
    dm = TextDataModule(Periodic(), VOCAB, batch_size=4, seq_len=64)
    sig = backward_baseline(dm, LAGS, order=3)
    accuracy = dict(zip(LAGS, sig.accuracy[0]))
    assert all(accuracy[lag] == pytest.approx(1.0) for lag in (1, 2, 3, 5))
    assert accuracy[0] == pytest.approx(1 / 7, abs=0.01) and accuracy[-1] == pytest.approx(1 / 7, abs=0.01)


def test_on_shakespeare_more_later_symbols_imply_more():
    """Real text: the baseline beats the majority rate and rises with the number of later symbols
    it reads, until the order caps them."""
    dm = TextDataModule(TextCorpus(str(TINY)), VOCAB, batch_size=16, seq_len=128, max_chars=300_000)
    sig = backward_baseline(dm, [1, 2, 3, 4, 6, 9], order=5)
    accuracy = sig.accuracy[0]
    assert accuracy[0] > sig.majority_rate[0, 0] + 0.05
    assert (np.diff(accuracy[:4]) > 0).all(), accuracy  # δ = 1…4: 1…4 later symbols
    assert abs(accuracy[5] - accuracy[4]) < 0.03, accuracy  # δ = 6, 9: both read order − 1 = 4
    low, high = sig.accuracy_ci()
    assert ((low < accuracy) & (accuracy < high)).all() and (high - low < 0.05).all()  # block intervals


def test_the_lift_of_a_delay_line_is_its_memory_beyond_inference(random_dm, one_thread):
    """A shift register of depth 2 over i.i.d. text recalls δ ≤ 2 exactly; the baseline is the
    majority rate, so the lift is 1 − majority there and 0 beyond."""
    lags = [1, 2, 4]
    sig = MLPProbe(lags=lags, width=32, controls=[], eval_every=25, seeds=1).fit(
        DelayLine(VOCAB, k=2), random_dm, progress=False
    )
    base = backward_baseline(random_dm, lags, order=4)
    lift = sig.accuracy[0] - base.accuracy[0]
    np.testing.assert_allclose(lift[:2], 1 - base.majority_rate[0, :2], atol=0.02)
    assert abs(lift[2]) < 0.03
