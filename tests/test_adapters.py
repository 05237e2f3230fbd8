"""HookedStateSource: any nn.Module as a state source, through forward hooks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import memsig
from memsig.adapters import HookedStateSource
from memsig.data.corpora import Corpus, Splits
from memsig.data.text import TextDataModule
from memsig.vocab import Vocab, VocabMismatchError

VOCAB = Vocab()


class UserRNN(nn.Module):
    """A user's own model, unaware of memsig: embedding, GRU, dropout, LSTM, projection."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(len(VOCAB), 8)
        self.rnn1 = nn.GRU(8, 16, batch_first=True)
        self.drop = nn.Dropout(0.5)
        self.rnn2 = nn.LSTM(16, 16, batch_first=True)
        self.out = nn.Linear(16, len(VOCAB))

    def forward(self, x: Tensor) -> Tensor:
        h1, _ = self.rnn1(self.emb(x))
        h2, _ = self.rnn2(self.drop(h1))
        return self.out(h2)


class Window(nn.Module):
    """Concatenated one-hots of ``x_t, x_{t-1}, …, x_{t-k}`` within the window (zeros before its start)."""

    def __init__(self, num_symbols: int, k: int) -> None:
        super().__init__()
        self.num_symbols, self.k = num_symbols, k

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        padded = F.pad(x, (self.k, 0), value=self.num_symbols)  # an extra class whose one-hot is dropped
        onehot = F.one_hot(padded, self.num_symbols + 1)[..., : self.num_symbols].float()
        return torch.cat([onehot[:, self.k - j : self.k - j + t] for j in range(self.k + 1)], -1)


class ShiftRegisterLM(nn.Module):
    """A module whose hooked ``register`` output provably holds the last ``k`` symbols and nothing older."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.register = Window(len(VOCAB), k)
        self.readout = nn.Linear((k + 1) * len(VOCAB), len(VOCAB))

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.register(x))


class RandomSymbols(Corpus):
    """I.i.d. uniform letters: nothing about x_{t-δ} is predictable from other symbols."""

    name = "random"

    def __init__(self, n: int = 16000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        self.text = ["".join(rng.choice(letters, n)) for _ in range(3)]

    def load(self) -> Splits:
        return Splits([self.text[0]], [self.text[1][:6000]], [self.text[2][:6000]])


def make_batch(b: int = 3, t: int = 7, first_history: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "inputs": torch.randint(0, len(VOCAB), (b, t), generator=g),
        "mask": torch.ones(b, t, dtype=torch.bool),
        "history": (first_history + torch.arange(t)).expand(b, t).clone(),
        "carry": first_history > 0,
    }


@pytest.fixture()
def user_rnn() -> UserRNN:
    torch.manual_seed(0)
    return UserRNN().train()


def test_hooked_states_are_the_modules_own_outputs(user_rnn: UserRNN) -> None:
    source = HookedStateSource(user_rnn, VOCAB, {"g1": "rnn1", "l2": "rnn2"})
    assert source.state_names == ["g1", "l2"] and source.state_dims == {"g1": 16, "l2": 16}
    batch = make_batch()
    sb = source.states(batch)
    with torch.no_grad():
        h1, _ = user_rnn.rnn1(user_rnn.emb(batch["inputs"]))
        h2, _ = user_rnn.rnn2(h1)  # eval mode: dropout is the identity
    assert sb.states["g1"].shape == sb.states["l2"].shape == (3, 7, 16)
    torch.testing.assert_close(sb.states["g1"], h1)
    torch.testing.assert_close(sb.states["l2"], h2)
    assert not any(s.requires_grad for s in sb.states.values())
    assert torch.equal(sb.symbols, batch["inputs"]) and torch.equal(sb.mask, batch["mask"])
    assert user_rnn.training  # mode restored
    assert not user_rnn.rnn1._forward_hooks and not user_rnn.rnn2._forward_hooks


def test_time_major_outputs_are_transposed() -> None:
    torch.manual_seed(0)
    emb, gru = nn.Embedding(len(VOCAB), 4), nn.GRU(4, 5)
    model = nn.Sequential(emb, gru)
    source = HookedStateSource(model, VOCAB, {"h": "1"}, forward=lambda m, x: m(x.T), batch_first=False)
    batch = make_batch(b=2, t=6)
    with torch.no_grad():
        expected, _ = gru(emb(batch["inputs"].T))
    torch.testing.assert_close(source.states(batch).states["h"], expected.transpose(0, 1))


def test_bad_submodule_path_is_named(user_rnn: UserRNN) -> None:
    with pytest.raises(ValueError, match="rnn3"):
        HookedStateSource(user_rnn, VOCAB, {"g1": "rnn1", "x": "rnn3"})


def test_history_is_clipped_to_the_window_unless_the_module_carries_state(user_rnn: UserRNN) -> None:
    batch = make_batch(b=2, t=5, first_history=100)
    clipped = HookedStateSource(user_rnn, VOCAB, {"g1": "rnn1"}).states(batch).history
    assert clipped.tolist() == [[0, 1, 2, 3, 4]] * 2
    carried = HookedStateSource(user_rnn, VOCAB, {"g1": "rnn1"}, carries_state=True).states(batch).history
    assert torch.equal(carried, batch["history"])


def test_probe_of_a_hooked_shift_register_recalls_exactly_its_depth(random_dm: TextDataModule) -> None:
    torch.manual_seed(0)
    source = HookedStateSource(ShiftRegisterLM(k=2), VOCAB, {"taps": "register"})
    assert source.state_dims == {"taps": 3 * len(VOCAB)}
    sig = memsig.probe(source, random_dm, lags=[1, 2, 3], width=32, controls=[], progress=False, lr=0.01)
    acc = dict(zip(sig.lags, sig.accuracy[sig.index("taps")]))
    chance = dict(zip(sig.lags, sig.majority_rate[0]))
    assert acc[1] > 0.95 and acc[2] > 0.95, acc
    assert abs(acc[3] - chance[3]) < 0.03, (acc, chance)


def test_probe_refuses_data_of_another_vocab(user_rnn: UserRNN) -> None:
    source = HookedStateSource(user_rnn, VOCAB, {"g1": "rnn1"})
    other = TextDataModule(RandomSymbols(n=100), Vocab(extra_symbols="!?"), batch_size=2, seq_len=8)
    with pytest.raises(VocabMismatchError, match="extra_symbols"):
        memsig.probe(source, other, lags=[1], progress=False)
