"""Conditional memory: what a state holds about x_{t-δ} beyond what the later symbols imply
(``given:`` decoders on top of the backward-context baseline), against known answers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from memsig.data.corpora import Corpus, Splits, TextCorpus
from memsig.data.text import TextDataModule
from memsig.models.delay_line import DelayLine
from memsig.models.ngram import NGramLM
from memsig.probe import MLPProbe
from memsig.probe.backward import backward_baseline, scored_baseline
from memsig.probe.multihead import unconverged_heads
from memsig.probe.signature import BACKWARD, GIVEN, Signature
from memsig.vocab import Vocab

from conftest import TINY

VOCAB = Vocab()


class Markov(Corpus):
    """A first-order Markov chain over eight letters with sparse random transitions: each symbol
    is partly implied by the one after it, so the baseline beats the prior but leaves entropy."""

    name = "markov"

    def __init__(self, n: int = 40000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefgh"))
        transitions = rng.dirichlet(np.full(8, 0.3), size=8)
        texts = []
        for size in (n, 8000, 8000):
            x = [0]
            for _ in range(size - 1):
                x.append(rng.choice(8, p=transitions[x[-1]]))
            texts.append("".join(letters[x]))
        self.text = texts

    def load(self) -> Splits:
        return Splits([self.text[0]], [self.text[1]], [self.text[2]])


def conditional_probe(lags: list[int], **options) -> MLPProbe:
    settings = {"width": 32, "controls": ["shuffled"], "eval_every": 25, "seeds": 2, "baseline_order": 4}
    return MLPProbe(lags=lags, **{**settings, **options})


def includes_zero(bits: dict, j: int) -> bool:
    return bits["low"][j] <= 0 <= bits["high"][j]


@pytest.fixture(scope="module")
def markov_dm() -> TextDataModule:
    return TextDataModule(Markov(), VOCAB, batch_size=8, seq_len=128)


@pytest.fixture(scope="module")
def markov_delay(markov_dm, one_thread) -> Signature:
    return conditional_probe([1, 2, 3, 4]).fit(DelayLine(VOCAB, k=2), markov_dm, progress=False)


def test_a_delay_line_over_markov_text_holds_all_that_inference_leaves_up_to_k(markov_delay):
    """State = the last k = 2 symbols: for δ ≤ k the conditional memory is the baseline's whole
    remaining entropy (its cross-entropy), for δ > k nothing (0 within the interval), though
    plain recall there stays above chance (inference from the symbols the state does hold)."""
    sig = markov_delay
    bits = sig.conditional_bits("delay")
    baseline_ce = sig.ce_bits[sig.index(BACKWARD)]
    assert baseline_ce[0] > 1.0  # the chain leaves entropy to remember
    np.testing.assert_allclose(bits["bits"][:2], baseline_ce[:2], atol=0.03)
    assert includes_zero(bits, 2) and includes_zero(bits, 3), (bits["low"], bits["high"])
    assert abs(bits["bits"][2]) < 0.01 and abs(bits["bits"][3]) < 0.01
    assert sig.accuracy[sig.index("delay"), 2] > sig.majority_rate[0, 2] + 0.1  # inference, not memory
    assert bits["total_low"] < bits["total"] < bits["total_high"]
    np.testing.assert_allclose(bits["total"], bits["bits"].sum())


def test_shuffled_states_hold_no_memory_beyond_inference(markov_delay):
    bits = markov_delay.conditional_bits("shuffled:delay")
    assert all(includes_zero(bits, j) for j in range(4)), (bits["low"], bits["high"])
    assert bits["total_low"] <= 0 <= bits["total_high"]


def test_the_probes_baseline_is_the_backward_baseline_on_the_same_positions(markov_delay, markov_dm):
    """The looked-up baseline inside the probe equals the queried one of backward_baseline:
    same predictions on every test position, same cross-entropy, same lag-wise reads."""
    sig = markov_delay
    base = backward_baseline(markov_dm, sig.lags, order=4)
    i = sig.index(BACKWARD)
    np.testing.assert_array_equal(sig.confusion[i], base.confusion[0] * sig.seeds)
    np.testing.assert_allclose(sig.ce_bits[i], base.ce_bits[0], atol=1e-4)
    assert sig.meta["probe"]["later_symbols"] == base.meta["probe"]["later_symbols"]


def test_the_probes_scored_baseline_is_the_fitted_one(markov_delay, markov_dm):
    """baseline.npz comes from the probe's own ``backward`` row when the orders agree: the same
    counts, blocks, cross-entropy, prior and intervals as fitting and scoring it again."""
    sig = markov_delay
    fitted = backward_baseline(markov_dm, sig.lags, order=4, block_len=sig.meta["probe"]["block_len"])
    scored = scored_baseline(sig, 4)
    assert scored is not None and scored.states == fitted.states and scored.seeds == 1
    for name in ("confusion", "block_correct", "block_support"):
        np.testing.assert_array_equal(getattr(scored, name), getattr(fitted, name), err_msg=name)
    np.testing.assert_allclose(scored.ce_bits, fitted.ce_bits, atol=1e-4)
    np.testing.assert_allclose(scored.prior, fitted.prior, atol=1e-6)
    np.testing.assert_allclose(np.stack(scored.accuracy_ci()), np.stack(fitted.accuracy_ci()), atol=1e-9)
    assert scored.meta["probe"] == fitted.meta["probe"]
    assert scored_baseline(sig, 5) is None  # another order: fit it
    assert scored_baseline(sig.select(["delay"]), 4) is None  # no baseline scored


def test_a_decoder_of_the_prior_alone_holds_nothing_where_test_frequencies_differ():
    """All a state holds is measured against the training prior's cross-entropy on the decoder's
    own test positions, not against the prior's entropy: a decoder that learned only the prior
    holds 0 bits even where the test split's frequencies are not the training split's."""
    prior = np.array([0.75, 0.25])
    support = np.array([[1, 3], [2, 2]])  # [K, C] test positions per lag and true symbol
    confusion = np.zeros((1, 2, 2, 2), dtype=np.int64)
    confusion[0, :, :, 0] = support  # always answers the likelier symbol
    prior_ce = -(support * np.log2(prior)).sum(-1) / support.sum(-1)
    sig = Signature(["prior only"], [1, 2], ["a", "b"], confusion, prior_ce[None], prior, min_support=1)
    np.testing.assert_allclose(sig.prior_ce_bits[0], [1.6038, 1.2075], atol=1e-4)
    np.testing.assert_allclose(sig.info_bits, 0.0, atol=1e-12)
    seen_once = Signature(["s"], [1, 2], ["a", "b"], confusion, prior_ce[None], np.array([1.0, 0.0]))
    assert np.isfinite(seen_once.prior_ce_bits).all()  # an unseen target: the rarest seen one's probability


def test_over_iid_text_conditional_memory_is_unconditional_memory(random_dm, one_thread):
    """Nothing about an i.i.d. symbol is implied by its neighbours: the baseline is the prior, so
    what a state holds beyond inference is all it holds (CE(prior) − CE)."""
    sig = conditional_probe([1, 3], controls=[], seeds=1).fit(DelayLine(VOCAB, k=2), random_dm, progress=False)
    np.testing.assert_allclose(sig.ce_bits[sig.index(BACKWARD)], sig.prior_ce_bits[sig.index(BACKWARD)], atol=0.05)
    bits = sig.conditional_bits("delay")["bits"]
    np.testing.assert_allclose(bits, sig.info_bits[sig.index("delay")], atol=0.05)
    assert bits[0] > 4.0 and abs(bits[1]) < 0.02


def test_an_ngram_state_holds_nothing_beyond_its_context(one_thread):
    """A Kneser-Ney trigram's state is its context x_{t-1}, x_t: beyond δ = 1 what it holds of
    x_{t-δ} is what the later symbols imply, so its conditional memory is 0 there."""
    dm = TextDataModule(TextCorpus(str(TINY)), VOCAB, batch_size=16, seq_len=128, max_chars=200_000)
    model = NGramLM(VOCAB, 3).fit(dm.ids("train").long())
    sig = conditional_probe([1, 2, 3], controls=[], seeds=1, width=64).fit(model, dm, progress=False)
    bits = sig.conditional_bits("context")
    assert bits["bits"][0] > 1.0, bits["bits"]
    assert abs(bits["bits"][1]) < 0.02 and abs(bits["bits"][2]) < 0.02, bits["bits"]


def test_conditional_bits_round_trip_and_need_their_decoders(markov_delay, tmp_path):
    sig = markov_delay
    again = Signature.load(sig.save(tmp_path / "s.npz"))
    assert again == sig
    np.testing.assert_array_equal(again.conditional_bits("delay")["cells"], sig.conditional_bits("delay")["cells"])
    assert sig.real_states == ["delay"] and GIVEN + "delay" in sig.states
    with pytest.raises(KeyError, match="given:layer1.c"):
        sig.conditional_bits("layer1.c")
    plain = sig.select(["delay", BACKWARD, GIVEN + "delay"])
    plain.block_nll = None
    with pytest.raises(ValueError, match="per-block cross-entropy"):
        plain.conditional_bits("delay")


def test_a_signature_cut_to_some_lags_measures_them_as_the_whole_did(markov_delay):
    """``select(lags=...)`` keeps each lag's counts, so recall, intervals and bits at those lags are
    the whole signature's, and the total beyond inference is their sum."""
    sig, keep = markov_delay, [3, 1]
    cut, ks = sig.select(lags=keep), [sig.lags.index(lag) for lag in keep]
    assert cut.lags == keep and cut.states == sig.states
    np.testing.assert_array_equal(cut.accuracy, sig.accuracy[:, ks])
    np.testing.assert_array_equal(cut.accuracy_ci()[0], sig.accuracy_ci()[0][:, ks])
    np.testing.assert_allclose(cut.info_bits, sig.info_bits[:, ks])
    whole, part = sig.conditional_bits("delay"), cut.conditional_bits("delay")
    np.testing.assert_allclose(part["bits"], whole["bits"][ks])
    assert part["total"] == pytest.approx(whole["bits"][ks].sum()) and part["total_high"] > part["total"]
    assert part["total"] < whole["total"]  # lag 2 of the delay line holds bits too
    with pytest.raises(KeyError, match=r"lags \[9\] not in signature"):
        sig.select(lags=[1, 9])


def test_a_cut_signature_reports_only_the_decoders_it_holds(markov_delay):
    """``select`` cuts the per-head records with the cells: the provenance counts the decoders the
    cut holds, a head that did not converge outside the cut is not reported, and the baseline
    taken from a lag cut reads the later symbols of those lags."""
    sig = copy.deepcopy(markov_delay)
    records = sig.meta["convergence"]
    records["shuffled:delay@1.0#1"]["converged"][3] = False  # lag 4 of one control seed
    heads = sum(len(r["converged"]) for r in records.values())
    assert sig.provenance().startswith(f"MLP probe, 1 of {heads} NOT converged")
    assert unconverged_heads(sig) == ["shuffled:delay δ=4 (seed 1)"]

    cut = sig.select(lags=[3, 1])
    assert cut.provenance().startswith(f"MLP probe, all {heads // 2} decoders converged")
    assert cut.meta["convergence"]["delay@1.0#0"]["steps"] == [records["delay@1.0#0"]["steps"][k] for k in (2, 0)]
    assert cut.meta["dev_loss"]["delay@1.0#1"] == [sig.meta["dev_loss"]["delay@1.0#1"][k] for k in (2, 0)]
    reads = sig.meta["probe"]["later_symbols"]
    assert scored_baseline(cut, 4).meta["probe"]["later_symbols"] == [reads[2], reads[0]]

    mine = sig.select(["delay", BACKWARD, GIVEN + "delay"])
    assert sorted(mine.meta["convergence"]) == ["delay@1.0#0", "delay@1.0#1", "given:delay@1.0#0", "given:delay@1.0#1"]
    assert unconverged_heads(mine) == [] and mine.provenance().startswith("MLP probe, all 16 decoders converged")
    assert sig.select(["shuffled:delay"], [4]).provenance().startswith("MLP probe, 1 of 2 NOT converged")


def test_conditional_decoders_need_cached_symbol_targets():
    with pytest.raises(ValueError, match="probe.baseline_order"):
        MLPProbe(baseline_order=4, cache=False).module(DelayLine(VOCAB, k=2))
    with pytest.raises(ValueError, match="probe.baseline_order"):
        MLPProbe(baseline_order=4, target="bigram").module(DelayLine(VOCAB, k=2))
