"""The factorized-kernel LM: its two paths against plain cells and the materialised kernel."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from memsig.models import load_model
from memsig.models.checkpoint import CheckpointError
from memsig.models.factorized import FactorizedCharLM, FixedLambda
from memsig.tasks.train import train
from memsig.vocab import Vocab

from conftest import compose_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = Vocab()
K = len(VOCAB) ** 2


def model(cell: str = "lstm", layers: int = 1, hidden: int = 12, **kw) -> FactorizedCharLM:
    torch.manual_seed(0)
    return FactorizedCharLM(VOCAB, cell=cell, num_layers=layers, hidden_size=hidden, embedding_size=6, **kw).double()


def inputs(b: int = 3, t: int = 7) -> torch.Tensor:
    return torch.randint(0, len(VOCAB), (b, t), generator=torch.Generator().manual_seed(1))


def plain_run(m: FactorizedCharLM, x: torch.Tensor, kernels: list[torch.Tensor]) -> torch.Tensor:
    """Logits of the same LM run row by row through plain ``nn.LSTM``/``nn.GRU`` layers whose
    ``weight_hh`` is the given (materialised) kernel of each row."""
    out = []
    for row, w in zip(x, kernels):
        h = m.net.embedding(row[None])
        for layer in m.net.layers:
            plain = type(layer)(layer.input_size, layer.hidden_size, batch_first=True).double()
            plain.load_state_dict({**layer.state_dict(), "weight_hh_l0": w})
            h, _ = plain(h)
        out.append(m.net.projection(h))
    return torch.cat(out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zero_lambda_or_zero_bases_is_the_plain_cell_with_w0(cell: str) -> None:
    m = model(cell)
    x = inputs()
    w0 = [m.net.layers[0].weight_hh_l0.detach()] * len(x)
    expected = plain_run(m, x, w0)
    z = torch.randn(len(x), K, dtype=torch.float64)
    for lam in (torch.zeros(K, dtype=torch.float64), torch.zeros(len(x), K, dtype=torch.float64)):
        torch.testing.assert_close(m(x, lam=lam)[0], expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        m.net.bases[0].u.zero_()
    torch.testing.assert_close(m(x, lam=z)[0], expected, atol=1e-6, rtol=0)  # per-row path, u = 0
    torch.testing.assert_close(m(x, lam=z[0])[0], expected, atol=1e-6, rtol=0)  # folded path, u = 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_low_rank_paths_equal_the_materialised_sum(cell: str) -> None:
    m = model(cell, layers=1)
    x = inputs()
    z = torch.randn(len(x), K, dtype=torch.float64)
    b = m.net.bases[0]
    w0 = m.net.layers[0].weight_hh_l0.detach()
    # Σ_k λ_k u_k v_kᵀ, materialised basis by basis
    kernels = [w0 + sum(zr[k] * torch.outer(b.u[:, k], b.v[:, k]) for k in range(K)).detach() for zr in z]
    torch.testing.assert_close(m(x, lam=z)[0], plain_run(m, x, kernels), atol=1e-9, rtol=0)
    shared = z[1]
    torch.testing.assert_close(m(x, lam=shared)[0], plain_run(m, x, [kernels[1]] * len(x)), atol=1e-9, rtol=0)
    torch.testing.assert_close(m(x, lam=shared.expand(len(x), -1))[0], m(x, lam=shared)[0], atol=1e-9, rtol=0)


def test_cell_states_of_both_paths_match_a_step_by_step_cell() -> None:
    m = model("lstm", layers=2)
    x = inputs()
    z = torch.randn(K, dtype=torch.float64)
    batch = {"inputs": x, "mask": torch.ones_like(x, dtype=torch.bool), "history": torch.zeros_like(x), "carry": False}
    folded = m.states({**batch, "lam_z": z})
    looped = m.states({**batch, "lam_z": z.expand(len(x), -1)})
    emb = m.net.embedding(x)
    cell = nn.LSTMCell(6, 12).double()
    layer = m.net.layers[0]
    cell.load_state_dict(
        {
            "weight_ih": layer.weight_ih_l0,
            "bias_ih": layer.bias_ih_l0,
            "bias_hh": layer.bias_hh_l0,
            "weight_hh": m.net.bases[0].fold(layer.weight_hh_l0, z),
        }
    )
    h = c = torch.zeros(len(x), 12, dtype=torch.float64)
    for t in range(x.shape[1]):
        h, c = cell(emb[:, t], (h, c))
        for sb in (folded, looped):
            torch.testing.assert_close(sb.states["layer1.c"][:, t], c, atol=1e-9, rtol=0)
            torch.testing.assert_close(sb.states["layer1.h"][:, t], h, atol=1e-9, rtol=0)
    torch.testing.assert_close(folded.states["layer2.c"], looped.states["layer2.c"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_reach_u_v_and_w0(shared: bool) -> None:
    m = model("lstm")
    x = inputs()
    z = torch.randn(K, dtype=torch.float64) if shared else torch.randn(len(x), K, dtype=torch.float64)
    m(x, lam=z)[0].square().sum().backward()
    for p in (m.net.bases[0].u, m.net.bases[0].v, m.net.layers[0].weight_hh_l0, m.net.layers[0].weight_ih_l0):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_normalisation_standardises_clips_and_zeroes_constant_bases() -> None:
    m = model()
    mean, std = torch.full((K,), 1 / K), torch.full((K,), 1e-3)
    std[0] = 0.0
    m.fit_lambda_norm(mean, std)
    f = mean + torch.linspace(-0.01, 0.01, K)
    z = m.normalize(f)
    assert z[0] == 0 and z.abs().max() == pytest.approx(5.0)
    torch.testing.assert_close(z[1:100], ((f - mean) / 1e-3).clamp(-5, 5)[1:100], check_dtype=False)
    with pytest.raises(ValueError, match="statistic=bigram"):
        m.normalize(torch.zeros(len(VOCAB)))
    with pytest.raises(ValueError, match="data/lambdas=bigram"):
        m.conditioning({"inputs": inputs()})


@pytest.mark.parametrize("refit", [False, True])
def test_a_fitted_lambda_scale_is_kept_at_the_next_fit_unless_refit(refit: bool) -> None:
    m = model(lambda_refit=refit)
    source = (torch.full((K,), 1 / K), torch.full((K,), 1e-3))
    target = (torch.full((K,), 2 / K), torch.full((K,), 4e-3))
    for moments in (source, target):  # the first fit (never fitted), then e.g. a fine-tuning on another corpus
        dm = SimpleNamespace(lambdas=SimpleNamespace(scope="cluster"), lambda_moments=lambda moments=moments: moments)
        m.trainer = SimpleNamespace(datamodule=dm)
        m.on_fit_start()
    expected = target if refit else source
    torch.testing.assert_close(m.lambda_mean, expected[0].double())
    torch.testing.assert_close(m.lambda_std, expected[1].double())


def test_fixed_lambda_is_a_state_source_and_bases_only_training_freezes_the_rest() -> None:
    m = model(trainable="bases")
    fixed = FixedLambda(m, torch.zeros(K))
    x = inputs()
    sb = fixed.states(
        {"inputs": x, "mask": torch.ones_like(x, dtype=torch.bool), "history": torch.zeros_like(x), "carry": False}
    )
    assert set(sb.states) == {"layer1.c", "layer1.h"} and fixed.kernel_params("layer1.c") > m.net.bases[0].u.numel()
    m.configure_optimizers()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"net.bases.0.u", "net.bases.0.v"}


@pytest.mark.parametrize("scope", ["segment", "cluster"])
def test_training_fits_the_lambda_scale_and_learns(scope: str, tmp_path, tiny_corpus) -> None:
    cfg = compose_cfg(
        [
            "model=factorized_lstm",
            f"data.lambdas.scope={scope}",
            "data.lambdas.clusters=4",
            "data.max_chars=20000",
            "data.batch_size=16",
            "model.hidden_size=32",
            "model.embedding_size=8",
            "model.lr=0.01",
            "trainer.max_steps=150",
            "trainer.max_epochs=5",
            "callbacks=model_checkpoint",
            "logger=none",
        ],
        tmp_path,
    )
    result = train(cfg)
    # 150 steps of a 32-unit model on 20k characters: clearly below the uniform 3.43 nats, near the unigram's
    assert result["metrics"]["val/loss"] < math.log(len(VOCAB)) - 0.3
    m = load_model(result["best_checkpoint"], expected=FactorizedCharLM)
    assert bool(m.lambda_fitted) and (m.lambda_std > 0).sum() > 100
    other = compose_cfg(
        ["model=lstm", f"init_from={result['best_checkpoint']}", "data.max_chars=20000"], tmp_path / "x"
    )
    with pytest.raises(CheckpointError, match="FactorizedCharLM"):
        train(other)


def test_state_gradients_of_the_factorized_lm_say_they_are_not_supported() -> None:
    from memsig.analysis.state_gradients import state_gradients

    with pytest.raises(NotImplementedError, match="without gradients"):
        state_gradients(model(), inputs(1, 200)[0], lags=3, positions=4)
