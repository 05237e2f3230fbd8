"""The Kneser-Ney n-gram LM: exact probabilities, its context state and the count-table decoder."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memsig.data.corpora import Corpus, Splits, TextCorpus, lines_of
from memsig.data.io import read_text
from memsig.data.text import TextDataModule
from memsig.models import NGramLM, load_model
from memsig.models.checkpoint import CheckpointError
from memsig.probe.count_table import count_table_signature
from memsig.probe.quick import quick_signature
from memsig.states import StateSource
from memsig.vocab import Vocab

from conftest import TINY
from conftest import lm_batch as batch

LAGS = [1, 2, 3, 4, 5]
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors (conftest)


class SameText(Corpus):
    """The first ``lines`` lines of tiny-shakespeare as train, dev and test alike: no context is unseen."""

    name = "same_text"

    def __init__(self, lines: int) -> None:
        self.lines = lines

    def load(self) -> Splits:
        segments = lines_of(read_text(TINY))[: self.lines]
        return Splits(segments, segments, segments)


@pytest.fixture(scope="module")
def dm() -> TextDataModule:
    assert TINY.is_file(), f"{TINY} is missing (set MEMSIG_DATA_DIR)"
    return TextDataModule(TextCorpus(str(TINY)), Vocab(), batch_size=8, seq_len=32, max_chars=30000)


@pytest.fixture(scope="module")
def lm(dm) -> NGramLM:
    return NGramLM(Vocab(), order=5).fit(dm.ids("train"))


def test_probabilities_sum_to_one_for_every_context_length(lm, dm):
    gen = torch.Generator().manual_seed(0)
    text = dm.ids("test").long()
    starts = torch.randint(0, len(text) - 4, (200,), generator=gen)
    real = torch.stack([text[s : s + 4] for s in starts])  # [200, 4] contexts seen in text
    context = torch.cat([real, torch.randint(0, len(lm.vocab), (200, 4), generator=gen)])
    length = torch.arange(400) % 5
    p = lm.next_log_probs(context, length).exp()  # [400, V]
    assert p.shape == (400, 31) and (p > 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(400, dtype=torch.float64), rtol=0, atol=1e-12)
    used = lm.used_context(context, length)
    assert (used <= length).all() and (used[:200][length[:200] == 4] == 4).float().mean() > 0.5
    # the model conditions on the used context only
    torch.testing.assert_close(lm.next_log_probs(context, used), lm.next_log_probs(context, length), rtol=0, atol=0)


def test_scoring_some_symbols_gives_their_columns_of_the_distribution(lm, dm):
    text = dm.ids("test").long()
    context = text[:800].view(200, 4)
    length = torch.arange(200) % 5
    symbols = torch.stack([text[800:1000], text[1000:1200] % 7], 1)  # [200, 2], repeats included
    full = lm.next_log_probs(context, length)
    assert torch.equal(lm.next_log_probs(context, length, symbols), full.gather(1, symbols))


def test_perplexity_matches_a_hand_computed_kneser_ney():
    """Order 2 fitted on "abaabbac" over {a, b, c, d}, scored on "bacdb", worked out by hand."""
    vocab = Vocab("abcd", digit_symbol=None)
    lm = NGramLM(vocab, order=2).fit(vocab.encode("abaabbac"))
    # bigram counts: ab 2, ba 2, aa 1, bb 1, ac 1 -> n1 = 3, n2 = 2, D2 = 3 / (3 + 4)
    # unigram continuations (distinct left neighbours, the start counting as one):
    # a {start, b, a} 3, b {a, b} 2, c {a} 1, d 0; total 6, 3 types; n1 = 1, n2 = 1 -> D1 = 1 / 3
    d1, d2 = Fraction(1, 3), Fraction(3, 7)
    p1 = {w: max(c - d1, Fraction(0)) / 6 + d1 * Fraction(3, 6) * Fraction(1, 4) for w, c in zip("abcd", (3, 2, 1, 0))}
    assert p1 == {"a": Fraction(35, 72), "b": Fraction(23, 72), "c": Fraction(11, 72), "d": Fraction(3, 72)}
    # contexts: a -> b 2, a 1, c 1 (total 4, 3 types); b -> a 2, b 1 (total 3, 2 types); c and d never seen
    expected = [
        (2 - d2) / 3 + d2 * Fraction(2, 3) * p1["a"],  # a | b
        (1 - d2) / 4 + d2 * Fraction(3, 4) * p1["c"],  # c | a
        p1["d"],  # d | c: c never seen as a context, order 1 alone
        p1["b"],  # b | d
    ]
    assert expected[:2] == [Fraction(334, 504), Fraction(387, 2016)]
    ppl = math.exp(-sum(math.log(p) for p in expected) / len(expected))
    result = lm.evaluate(vocab.encode("bacdb"))
    torch.testing.assert_close(lm.discounts, torch.tensor([1 / 3, 3 / 7], dtype=torch.float64))
    assert result["symbols"] == 4 and result["ppl"] == pytest.approx(ppl, rel=1e-12)
    assert result["bpc"] == pytest.approx(math.log2(ppl), rel=1e-12)
    assert lm.used_context(torch.tensor([[1], [0], [2], [3]]), torch.ones(4, dtype=torch.long)).tolist() == [1, 1, 0, 0]
    fixed = NGramLM(vocab, order=2, discount=0.5).fit(vocab.encode("abaabbac"))
    assert fixed.discounts.tolist() == [0.5, 0.5]


def test_state_holds_the_used_context_and_nothing_beyond(lm, dm):
    data = dm.dataset("test")
    first, second = data[0], data[1]
    lm.states(first)
    sb = lm.states(second)  # carried from the first window
    full = torch.cat([first["inputs"], second["inputs"], second["targets"][:, -1:]], 1)  # [B, 65]
    b, t = second["inputs"].shape
    state = sb.states["context"]
    assert isinstance(lm, StateSource) and lm.state_dims == {"context": 4 * 31 + 5} and state.shape == (b, t, 129)
    assert math.ceil(lm.kernel_params("context") / (129 + 31)) == 129  # probe width auto = D
    slots, used = state[..., :124].view(b, t, 4, 31), state[..., 124:]
    assert (used.sum(-1) == 1).all()
    used = used.argmax(-1)
    assert (used == 4).float().mean() > 0.5 and (used < 4).any()
    for j in range(4):  # slot j: x_{t-j} where j < L, zeros beyond
        expected = F.one_hot(full[:, t - j : 2 * t - j], 31) * (used > j)[..., None]
        assert torch.equal(slots[:, :, j], expected.float())
    for row in range(2):  # next_logits: the model's log-probability of the next symbol
        ll = lm.log_likelihood(full[row])[t:]
        got = sb.next_logits[row].gather(-1, second["targets"][row, :, None]).squeeze(-1)
        torch.testing.assert_close(got, ll.float())


def test_carried_states_equal_one_long_window(lm, dm):
    x = dm.ids("test")[:100].long().view(2, 50)
    whole = lm.states(batch(x))
    parts = [lm.states(batch(x[:, a:z], carry=a > 0, start=a)) for a, z in ((0, 20), (20, 22), (22, 50))]
    assert torch.equal(torch.cat([p.states["context"] for p in parts], 1), whole.states["context"])
    assert torch.equal(torch.cat([p.next_logits for p in parts], 1), whole.next_logits)
    fresh = lm.states(batch(x[:, 20:]))  # no carry: the context starts with the window
    assert (fresh.states["context"][:, 0, 124:].argmax(-1) <= 1).all()


def test_probe_recalls_the_context_and_the_count_table_bounds_it():
    dm = TextDataModule(SameText(400), Vocab(), batch_size=8, seq_len=32)
    lm = NGramLM(Vocab(), order=5).fit(dm.ids("train"))
    quick = quick_signature(lm, dm, lags=LAGS)
    table = count_table_signature(lm, dm, LAGS)
    np.testing.assert_array_equal(table.support, quick.support)  # the same positions and targets
    assert (quick.accuracy[0, :3] >= 0.99).all(), quick.accuracy  # lags 1-3 are in the context
    assert (table.accuracy[0, :3] >= 0.99).all() and (table.ce_bits[0, :3] < table.ce_bits[0, 3:].min()).all()
    assert (table.accuracy[0] >= quick.accuracy[0]).all(), (table.accuracy, quick.accuracy)
    assert (table.accuracy[0, 3:] > table.majority_rate[0, 3:]).all()
    probe = table.meta["probe"]
    assert probe["kind"] == "count_table" and probe["test_unseen_rate"] == [0.0] * len(LAGS)
    assert np.isfinite(table.ce_bits).all() and table.forward_confusion is not None


def test_save_load_round_trip_and_wrong_files(lm, tmp_path):
    path = lm.save(tmp_path / "ngram.pt")
    back = NGramLM.load(path)
    assert back.vocab == lm.vocab and back.order == lm.order and back.discount is None
    assert all(torch.equal(back.state_dict()[k], v) for k, v in lm.state_dict().items())
    context, length = torch.randint(0, 31, (10, 4)), torch.arange(10) % 5
    assert torch.equal(back.next_log_probs(context, length), lm.next_log_probs(context, length))
    assert isinstance(load_model(path), NGramLM)  # the generic loader reads it too
    with pytest.raises(CheckpointError, match="does not exist"):
        NGramLM.load(tmp_path / "missing.pt")
    other = tmp_path / "lstm.ckpt"
    torch.save({"memsig": {"model_class": "memsig.models.char_lm.CharLM", "vocab": Vocab().to_dict()}}, other)
    with pytest.raises(CheckpointError, match="CharLM"):
        NGramLM.load(other)
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(Vocab(), order=3).next_log_probs(context[:, :2], length.clamp(max=2))
    with pytest.raises(ValueError, match="order"):
        NGramLM(Vocab(), order=1)
