"""The lag convention at its boundaries."""

import pytest
import torch

from memsig.models import CharLM
from memsig.models.hf import HFCausalLM
from memsig.probe.targets import LeftContext, bigram_labels, lag_targets, resolve_probe
from memsig.vocab import Vocab


def window(symbols, start=0):
    b, t = symbols.shape
    return torch.arange(start, start + t).expand(b, t), torch.ones(b, t, dtype=torch.bool)


def test_positive_zero_and_negative_lags_inside_one_window():
    x = torch.tensor([[10, 11, 12, 13, 14]])
    hist, mask = window(x)
    ctx = LeftContext(2)
    targets, valid = lag_targets(ctx.extend("s", x, carry=False), hist, mask, [2, 1, 0, -1, -3])
    # position t=3 (symbol 13): lag 2 -> 11, lag 1 -> 12, lag 0 -> 13, lag -1 -> 14, lag -3 -> beyond
    assert targets[0, 3].tolist()[:4] == [11, 12, 13, 14]
    assert valid[0, 3].tolist() == [True, True, True, True, False]
    # lag δ exists exactly from t = δ on
    assert valid[0, :, 0].tolist() == [False, False, True, True, True]
    assert valid[0, :, 1].tolist() == [False, True, True, True, True]
    assert valid[0, :, 2].all()
    assert valid[0, :, 3].tolist() == [True, True, True, True, False]
    assert valid[0, :, 4].tolist() == [True, True, False, False, False]


def test_lags_reach_into_the_previous_window_when_state_is_carried():
    x = torch.arange(20, 30).view(1, 10)
    ctx = LeftContext(3)
    ctx.extend("s", x[:, :5], carry=False)
    hist, mask = window(x[:, 5:], start=5)
    targets, valid = lag_targets(ctx.extend("s", x[:, 5:], carry=True), hist, mask, [1, 3])
    assert valid.all()
    assert targets[0, 0].tolist() == [24, 22]  # position 5 recalls positions 4 and 2
    # without carry the context is dropped and history says so
    ctx2 = LeftContext(3)
    hist0, _ = window(x[:, 5:])
    _, valid0 = lag_targets(ctx2.extend("s", x[:, 5:], carry=False), hist0, mask, [1, 3])
    assert valid0[0, :, 1].tolist() == [False, False, False, True, True]


def test_padding_is_never_a_target_or_a_position():
    x = torch.tensor([[1, 2, 3, 0]])
    hist, _ = window(x)
    mask = torch.tensor([[True, True, True, False]])
    _, valid = lag_targets(LeftContext(1).extend("s", x, False), hist, mask, [1, -1])
    assert valid[0, :, 0].tolist() == [False, True, True, False]
    assert valid[0, :, 1].tolist() == [True, True, False, False]


def test_common_positions_share_one_set():
    x = torch.arange(8).view(1, 8)
    hist, mask = window(x)
    _, valid = lag_targets(LeftContext(3).extend("s", x, False), hist, mask, [1, 3], common=True)
    assert torch.equal(valid[..., 0], valid[..., 1]) and valid[0, :, 0].sum() == 5


def test_bigram_labels():
    assert bigram_labels(torch.tensor([[1, 2, 3]]), 10).tolist() == [[12, 23]]


def test_states_are_named_by_layer_counted_from_either_end():
    """A layer name probes its cell state (LSTM), else its first; ``layer-1`` is the top layer of
    any model, which is how a study of models of different depths names one state for all."""
    vocab = Vocab()
    lstm = CharLM(vocab, "lstm", num_layers=3, hidden_size=4, embedding_size=3)
    gru = CharLM(vocab, "gru", num_layers=2, hidden_size=4, embedding_size=3)
    mamba = HFCausalLM(vocab, {"model_type": "mamba", "hidden_size": 8, "num_hidden_layers": 4, "state_size": 2})
    assert resolve_probe(lstm, ["layer-1", "layer-3+layer2.h", "layer1"], [1])[0] == [
        "layer3.c",
        "layer1.c+layer2.h",
        "layer1.c",
    ]
    assert resolve_probe(gru, ["layer-1"], [1])[0] == ["layer2.h"]
    assert resolve_probe(mamba, ["layer-1", "layer-4"], [1])[0] == ["layer4.residual", "layer1.residual"]
    with pytest.raises(ValueError, match=r"probe state 'layer-3' is not exposed by the model; it has \['layer1.h'"):
        resolve_probe(gru, ["layer-3"], [1])
