"""State gradients: exact Jacobians in batches, whitening, and the memory they measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from memsig.analysis.state_gradients import (
    GradientMemory,
    correlate,
    jacobians,
    sample_positions,
    state_gradients,
    whitening,
)
from memsig.models.char_lm import CharLM
from memsig.probe.signature import Signature
from memsig.states import GradientSource, StateBatch
from memsig.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = Vocab()


class LinearRNN(nn.Module):
    """``h_t = A h_{t−1} + B x_t`` with ``x_t`` the embedding of symbol t: ∂h_t/∂x_{t−δ} = A^δ B."""

    def __init__(self, a: Tensor, b: Tensor, table: Tensor) -> None:
        super().__init__()
        self.a, self.b, self.table = a, b, table
        self.vocab, self.state_names, self.state_dims = VOCAB, ["h"], {"h": a.shape[0]}

    def embed(self, inputs: Tensor) -> Tensor:
        return self.table[inputs]

    def _run(self, x: Tensor, h: Tensor) -> Tensor:
        out = []
        for t in range(x.shape[1]):
            h = h @ self.a.T + x[:, t] @ self.b.T
            out.append(h)
        return torch.stack(out, 1)

    def embedded_states(self, emb: Tensor, context: Tensor | None = None, repeat: int = 1) -> dict[str, Tensor]:
        h = emb.new_zeros(emb.shape[0], self.a.shape[0])
        if context is not None and context.shape[1]:
            with torch.no_grad():
                h = self._run(self.embed(context), h[: len(context)])[:, -1].repeat(repeat, 1)
        return {"h": self._run(emb, h)}

    def states(self, batch: dict) -> StateBatch:
        with torch.no_grad():
            h = self.embedded_states(self.embed(batch["inputs"]))
        return StateBatch(h, batch["inputs"], batch["mask"], batch["history"])


def linear_rnn(a: Tensor, e: int = 5) -> LinearRNN:
    gen = torch.Generator().manual_seed(0)
    return LinearRNN(a, torch.randn(a.shape[0], e, generator=gen), torch.randn(len(VOCAB), e, generator=gen))


def stream(n: int = 400) -> Tensor:
    return torch.randint(0, len(VOCAB), (n,), generator=torch.Generator().manual_seed(1))


def test_the_jacobian_of_a_linear_rnn_is_a_power_of_a_times_b() -> None:
    torch.manual_seed(0)
    a = 0.5 * torch.randn(6, 6) / 6**0.5
    rnn = linear_rnn(a)
    assert isinstance(rnn, GradientSource)
    pos = sample_positions(400, 12, lags=5, warmup=3, seed=0)
    jac = jacobians(rnn, stream(), pos, lags=5, warmup=3, states=["h"], chunk=4)[0]["h"]  # 2 chunks of units
    assert jac.shape == (12, 6, 6, 5)
    for delta in range(6):
        expected = torch.linalg.matrix_power(a, delta) @ rnn.b
        torch.testing.assert_close(jac[:, delta], expected.expand(12, -1, -1), atol=1e-6, rtol=1e-5)


def test_a_shift_register_has_gradient_memory_exactly_as_long_as_it_is() -> None:
    k = 3
    shift = torch.diag(torch.ones(k * 5 - 5), -5)  # blocks of 5 move down one slot per step: memory k-1 steps
    rnn = linear_rnn(shift, e=5)
    rnn.b = torch.cat([torch.eye(5), torch.zeros(k * 5 - 5, 5)])
    rnn.state_dims = {"h": k * 5}
    grad = state_gradients(rnn, stream(), lags=6, positions=40, batch=16, warmup=2)
    assert grad.norm[0, : k - 1].min() > 0.5 and np.abs(grad.norm[0, k - 1 :]).max() == 0
    assert np.isnan(grad.singular_values).sum() == 0 and grad.decay(3)[0, k - 1 :].max() == 0
    # each remembered lag passes the embedding on unchanged (an isometry): the same spectrum
    np.testing.assert_allclose(grad.singular_values[0, 0], grad.singular_values[0, 1], rtol=1e-5)


def test_whitening_gives_identity_covariance_in_the_non_null_space() -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(31, 40, generator=gen, dtype=torch.float64)  # E ≥ |V|: covariance of rank ≤ 30
    w = torch.rand(31, generator=gen, dtype=torch.float64) + 0.1
    white = whitening(emb, w)
    assert white.rank == 30  # Cholesky of the 40×40 covariance would fail
    z = (emb - white.mean) @ white.inverse
    p = w / w.sum()
    torch.testing.assert_close(z.T @ (z * p[:, None]), torch.eye(30, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(white.inverse.T @ white.factor, torch.eye(30, dtype=torch.float64), atol=1e-8, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_char_lm_jacobians_in_both_modes_equal_one_position_per_autograd_call(cell: str) -> None:
    torch.manual_seed(0)
    lm = CharLM(VOCAB, cell, num_layers=2, hidden_size=10, embedding_size=6).eval()
    ids, lags, warm = stream(), 4, 5
    pos = sample_positions(len(ids), 6, lags, warm, seed=3)
    names = ["layer1.c", "layer2.h"] if cell == "lstm" else ["layer1.h", "layer2.h"]
    reverse, rev_inputs = jacobians(lm, ids, pos, lags, warm, names, chunk=3, mode="reverse")
    forward, fwd_inputs = jacobians(lm, ids, pos, lags, warm, names)  # auto: the CharLM's forward mode
    for n, t in enumerate(pos.tolist()):
        context, window = ids[None, t - lags - warm : t - lags], ids[None, t - lags : t + 1]
        assert rev_inputs[n].tolist() == window[0].flip(0).tolist() and set(fwd_inputs[n].tolist()) == {
            window[0, 0].item()
        }
        for name in names:

            def run(e: Tensor, name: str = name, context: Tensor = context) -> Tensor:
                return lm.embedded_states(e, context)[name][0]

            full = torch.autograd.functional.jacobian(run, lm.embed(window).detach())[:, :, 0]  # [W, D, W, E]
            for delta in range(lags + 1):
                torch.testing.assert_close(reverse[name][n, delta], full[-1, :, lags - delta], atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(forward[name][n, delta], full[delta, :, 0], atol=1e-6, rtol=1e-5)


def test_gradient_memory_saves_and_loads_and_decays_like_the_model(tmp_path) -> None:
    rnn = linear_rnn(0.6 * torch.eye(4), e=4)
    grad = state_gradients(rnn, stream(2000), lags=3, positions=300, batch=100, warmup=2, seed=1)
    grad.save(tmp_path / "g.npz")
    back = GradientMemory.load(tmp_path / "g.npz")
    assert back.states == ["h"] and back.lags == [1, 2, 3] and back.meta == grad.meta
    np.testing.assert_array_equal(back.symbol_norm, grad.symbol_norm)
    assert grad.support[0, 0].sum() == 300 and (np.isnan(grad.symbol_norm) == (grad.support < 5)).all()
    np.testing.assert_allclose(grad.norm[0, 1:] / grad.norm[0, :-1], 0.6, rtol=1e-5)  # decays as 0.6^δ
    with pytest.raises(FileNotFoundError, match="gradients="):
        GradientMemory.load(tmp_path / "missing.npz")
    with pytest.raises(KeyError, match="not states of the model"):
        state_gradients(rnn, stream(), states=["layer9.c"])


def test_correlation_with_probe_recall_per_lag_and_across_lags() -> None:
    torch.manual_seed(0)
    lm = CharLM(VOCAB, "lstm", num_layers=1, hidden_size=12, embedding_size=6)
    grad = state_gradients(lm, stream(3000), lags=3, positions=600, batch=200, warmup=4, states=["layer1.c"])
    norm = np.nan_to_num(grad.symbol_norm[0])
    c = len(VOCAB)
    confusion = np.zeros((1, 3, c, c), dtype=np.int64)
    for j in range(3):  # recall rises with the symbol's gradient norm and falls with the lag
        rank = np.argsort(np.argsort(norm[j]))
        confusion[0, j, np.arange(c), np.arange(c)] = 20 + rank
        confusion[0, j, np.arange(c), (np.arange(c) + 1) % c] = 40 + 10 * j
    sig = Signature(["layer1.c"], [1, 2, 3], list(VOCAB.labels), confusion, np.ones((1, 3)), np.full(c, 1 / c))
    corr = correlate(grad, sig)["layer1.c"]
    assert grad.norm[0, 0] > grad.norm[0, 2] and corr["across_lags"] == pytest.approx(1.0)
    assert min(corr["per_lag"].values()) > 0.95 and corr["mean_per_lag"] > 0.95
