"""The character RNN: embedding, a stack of one-layer LSTMs or GRUs, projection.

    logits_{t} = W_P · RNN_L(… RNN_1(W_C · onehot(g_t))) + b_P,   predicting g_{t+1}

A plain ``nn.Module`` (training lives in :class:`~memsig.models.char_lm.CharLM`). The stack is
built from one-layer ``nn.LSTM``/``nn.GRU`` modules (fused kernels) so every layer's output
sequence is available. The LSTM cell state c_t of every position, which ``nn.LSTM`` does not
return, is recomputed from the returned h sequence (see :func:`lstm_cell_states`): one matmul
for all gates plus an elementwise loop.

Regularisation: ``dropout_embedding`` on W_C's output; ``dropout`` on each layer's output
(between layers and before W_P); ``dropout_recurrent`` drops entries of each recurrent
weight matrix W_hh once per forward pass (weight drop / DropConnect as in AWD-LSTM), the way
to regularise the state path that keeps the fused kernel.

Shapes: B batch rows, T steps, E embedding size, H hidden size, V symbols. A layer's state is
``h`` ``[1, B, H]`` (GRU) or ``(h, c)`` (LSTM), as ``nn.GRU``/``nn.LSTM`` take it. States by
name: ``layer{l}.h`` (and ``layer{l}.c`` for LSTM) ``[B, T, H]``, l = 1 nearest the input.

Extra inputs of every layer (``**cond``: e.g. the factorized network's λ) pass through
:meth:`CharRNN.forward` to :meth:`CharRNN.run_layer` and :meth:`CharRNN.cell_states`, the two
methods a network with another recurrent kernel replaces.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Cell = Literal["lstm", "gru"]
LayerState = Tensor | tuple[Tensor, Tensor]  # GRU: h [1, B, H]; LSTM: (h, c)
LayerRun = tuple[Tensor, Tensor, LayerState]  # a layer's input [B, T, I], output [B, T, H], initial state


def lstm_cell_states(
    layer: nn.LSTM, x: Tensor, h: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor | None = None
) -> Tensor:
    """Cell states of a one-layer batch-first ``nn.LSTM`` at every position.

    Args:
        layer: the LSTM (one layer, unidirectional, batch_first).
        x: ``[B, T, I]`` its input sequence.
        h: ``[B, T, H]`` its output sequence (as returned for ``x`` from ``(h0, c0)``).
        h0, c0: ``[B, H]`` the initial state.
        weight_hh: ``[4H, H]`` the recurrent kernel the run used (default: the layer's own).
    Returns:
        ``[B, T, H]`` c_t for every t.
    """
    h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
    w_hh = layer.weight_hh_l0 if weight_hh is None else weight_hh
    gates = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0) + F.linear(h_prev, w_hh, layer.bias_hh_l0)
    return cell_states_from_gates(gates, c0)


def cell_states_from_gates(gates: Tensor, c0: Tensor) -> Tensor:
    """``[B, T, H]`` the LSTM cell states c_t from the gate pre-activations ``[B, T, 4H]``
    (i, f, g, o, as ``nn.LSTM`` orders them) and the initial cell state ``c0`` ``[B, H]``."""
    i, f, g, _ = gates.chunk(4, dim=-1)
    i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
    ig = i * g
    c = torch.empty_like(ig)
    c_t = c0
    for t in range(ig.shape[1]):
        c_t = torch.addcmul(ig[:, t], f[:, t], c_t)
        c[:, t] = c_t
    return c


class CharRNN(nn.Module):
    """Character-level LSTM/GRU network (see module docstring).

    Args:
        vocab_size: V, the symbols in and out.
        cell: ``lstm`` or ``gru``.
        num_layers: stacked recurrent layers.
        hidden_size: H, units per layer (the paper's kernel size).
        embedding_size: E, the size of W_C's output.
        dropout_embedding, dropout, dropout_recurrent: see module docstring.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: Cell = "lstm",
        num_layers: int = 1,
        hidden_size: int = 320,
        embedding_size: int = 64,
        dropout_embedding: float = 0.0,
        dropout: float = 0.0,
        dropout_recurrent: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"model.cell must be lstm or gru; got {cell!r}")
        self.cell, self.hidden_size = cell, hidden_size
        self.dropout_embedding, self.dropout, self.dropout_recurrent = dropout_embedding, dropout, dropout_recurrent
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(
            rnn(embedding_size if i == 0 else hidden_size, hidden_size, batch_first=True) for i in range(num_layers)
        )
        self.projection = nn.Linear(hidden_size, vocab_size)
        self.state_names = [
            f"layer{i + 1}.{k}" for i in range(num_layers) for k in (("c", "h") if cell == "lstm" else ("h",))
        ]

    def zero_state(self, batch_size: int) -> list[LayerState]:
        """Per layer, the zero state of ``batch_size`` rows."""
        z = self.embedding.weight.new_zeros(1, batch_size, self.hidden_size)
        return [(z, z) if self.cell == "lstm" else z for _ in self.layers]

    def forward(
        self, inputs: Tensor, state: list[LayerState] | None = None, return_layers: bool = False, **cond: Any
    ) -> tuple[Tensor, list[LayerState], list[LayerRun]]:
        """Run the network.

        Args:
            inputs: ``[B, T]`` symbol ids.
            state: per layer, the state to start from (``None``: zeros).
            return_layers: also return each layer's ``(input [B,T,I], output [B,T,H], initial state)``.
            cond: passed to every layer (:meth:`run_layer`).
        Returns:
            logits ``[B, T, V]`` for the next symbol, the final state per layer, and the
            per-layer tuples (empty unless ``return_layers``).
        """
        x = F.dropout(self.embedding(inputs), self.dropout_embedding, self.training)
        return self.run_embedded(x, state, return_layers, **cond)

    def run_embedded(
        self, x: Tensor, state: list[LayerState] | None = None, return_layers: bool = False, **cond: Any
    ) -> tuple[Tensor, list[LayerState], list[LayerRun]]:
        """:meth:`forward` from the embedded inputs ``x`` ``[B, T, E]`` on."""
        state = state if state is not None else self.zero_state(x.shape[0])
        final, layers = [], []
        for i in range(len(self.layers)):
            out, s = self.run_layer(i, x, state[i], **cond)
            if return_layers:
                layers.append((x, out, state[i]))
            final.append(s)
            x = F.dropout(out, self.dropout, self.training)
        return self.projection(x), final, layers

    def run_layer(self, i: int, x: Tensor, state: LayerState, **cond: Any) -> tuple[Tensor, LayerState]:
        """Layer ``i`` (0-based) on ``x`` ``[B, T, I]`` from ``state``: outputs ``[B, T, H]`` and the
        final state; W_hh weight-dropped in training."""
        layer = self.layers[i]
        if self.training and self.dropout_recurrent > 0:
            params = dict(layer.named_parameters())
            params["weight_hh_l0"] = F.dropout(params["weight_hh_l0"], self.dropout_recurrent)
            return functional_call(layer, params, (x, state))
        return layer(x, state)

    def cell_states(self, i: int, x: Tensor, h: Tensor, s0: LayerState, **cond: Any) -> Tensor:
        """``[B, T, H]`` the cell states of LSTM layer ``i`` (0-based) for its run ``x`` → ``h`` from ``s0``
        (``cond``: as :meth:`forward`)."""
        return lstm_cell_states(self.layers[i], x, h, s0[0][0], s0[1][0])

    def named_states(self, layers: list[LayerRun], **cond: Any) -> dict[str, Tensor]:
        """``layer{l}.c`` (LSTM) and ``layer{l}.h`` ``[B, T, H]`` from :meth:`forward`'s per-layer tuples."""
        out: dict[str, Tensor] = {}
        for i, (x, h, s0) in enumerate(layers, start=1):
            if self.cell == "lstm":
                out[f"layer{i}.c"] = self.cell_states(i - 1, x, h, s0, **cond)
            out[f"layer{i}.h"] = h
        return out

    def kernel_params(self, layer: int) -> int:
        """Parameters of the kernel (W_ih, W_hh, biases) of ``layer`` (1-based), plus W_C for layer 1."""
        n = sum(p.numel() for p in self.layers[layer - 1].parameters())
        return n + (self.embedding.weight.numel() if layer == 1 else 0)
