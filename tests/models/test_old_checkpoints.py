"""Checkpoints written before the network became its own module (``CharRNN``) still load and
compute exactly what they computed.

``old_layout/*.pt``: tiny random-weight models (LSTM, GRU, factorized LSTM with a fitted λ
normalisation) saved by the code of commit 7cbefe8, whose parameters sit at the top level
(``embedding.weight``, ``layers.0.weight_hh_l0``, ``bases.0.u``), with the logits and states that
code gave on one batch (``old_outputs``).
"""

from pathlib import Path

import pytest
import torch

from memsig.models import CharLM, load_model, load_weights

OLD = Path(__file__).parent / "old_layout"


@pytest.mark.parametrize("name", ["lstm", "gru", "factorized_lstm"])
def test_an_old_checkpoint_loads_and_computes_the_same(name: str) -> None:
    path = OLD / f"{name}.pt"
    old = torch.load(path, weights_only=True)
    assert not any(key.startswith("net.") for key in old["state_dict"])  # the old layout
    model = load_model(path)
    assert type(model).__qualname__ == old["memsig"]["model_class"].rpartition(".")[2]
    sb = model.states({**old["old_outputs"]["batch"], "carry": False})
    torch.testing.assert_close(sb.next_logits, old["old_outputs"]["logits"], rtol=0, atol=0)
    assert list(sb.states) == list(old["old_outputs"]["states"])
    for state, expected in old["old_outputs"]["states"].items():
        torch.testing.assert_close(sb.states[state], expected, rtol=0, atol=0)


def test_old_weights_load_into_a_new_run() -> None:
    """``init_from`` and resuming load the old layout too (``load_state_dict``)."""
    model = CharLM(**torch.load(OLD / "lstm.pt", weights_only=True)["hyper_parameters"])
    load_weights(model, OLD / "lstm.pt")
    torch.testing.assert_close(model.state_dict(), load_model(OLD / "lstm.pt").state_dict(), rtol=0, atol=0)
