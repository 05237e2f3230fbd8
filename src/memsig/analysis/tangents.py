"""Forward-mode tangents through the CharRNN's cells: the state gradients' forward mode.

E unit tangents on a window's first input embedding ``e_p`` propagate through the LSTM/GRU cell
equations, written out step by step, and give ``∂s_{p+δ} / ∂e_p`` for every lag δ, layer and
state at once: O(E) work per step, where reverse mode needs O(D) per state. PyTorch's
forward-mode AD does not cover the fused oneDNN LSTM, hence the hand-written tangents. They
follow the equations of :class:`~memsig.models.char_rnn.CharRNN`'s ``nn.LSTM``/``nn.GRU`` layers
exactly, so only a plain CharRNN has a forward mode (:func:`tangent_net`); a network with another
kernel (the factorized one) has reverse mode only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.models.char_rnn import CharRNN


def lstm_tangents(
    layer: nn.LSTM, x: Tensor, dx: Tensor, h: Tensor | None, c: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Run LSTM ``layer`` on ``x`` ``[N, W, I]`` from ``(h, c)`` ``[N, H]`` (None: zeros) carrying the
    tangents ``dx`` ``[N, W, K, I]``: returns h ``[N, W, H]``, dh and dc ``[N, W, K, H]``."""
    w_hh = layer.weight_hh_l0
    gx = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0 + layer.bias_hh_l0)  # [N, W, 4H]
    dgx = dx @ layer.weight_ih_l0.T  # [N, W, K, 4H]
    n, steps, k, _ = dgx.shape
    size = w_hh.shape[1]
    h = h if h is not None else x.new_zeros(n, size)
    c = c if c is not None else x.new_zeros(n, size)
    dh, dc = x.new_zeros(n, k, size), x.new_zeros(n, k, size)
    hs, dhs, dcs = [], [], []
    for t in range(steps):
        gi, gf, gg, go = (gx[:, t] + h @ w_hh.T).chunk(4, -1)
        di, df, dg, do = (dgx[:, t] + dh @ w_hh.T).chunk(4, -1)
        i, f, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
        di, df = (i * (1 - i))[:, None] * di, (f * (1 - f))[:, None] * df
        dg, do = (1 - g * g)[:, None] * dg, (o * (1 - o))[:, None] * do
        dc = df * c[:, None] + f[:, None] * dc + di * g[:, None] + i[:, None] * dg
        c = f * c + i * g
        tc = torch.tanh(c)
        dh = do * tc[:, None] + (o * (1 - tc * tc))[:, None] * dc
        h = o * tc
        hs.append(h)
        dhs.append(dh)
        dcs.append(dc)
    return torch.stack(hs, 1), torch.stack(dhs, 1), torch.stack(dcs, 1)


def gru_tangents(layer: nn.GRU, x: Tensor, dx: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
    """As :func:`lstm_tangents` for a GRU layer (``nn.GRU``'s equations): h and dh."""
    w_hh, b_hh = layer.weight_hh_l0, layer.bias_hh_l0
    gx = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0)  # [N, W, 3H]
    dgx = dx @ layer.weight_ih_l0.T
    n, steps, k, _ = dgx.shape
    size = w_hh.shape[1]
    h = h if h is not None else x.new_zeros(n, size)
    dh = x.new_zeros(n, k, size)
    hs, dhs = [], []
    for t in range(steps):
        xr, xz, xn = gx[:, t].chunk(3, -1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, -1)
        dxr, dxz, dxn = dgx[:, t].chunk(3, -1)
        dhr, dhz, dhn = (dh @ w_hh.T).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        cand = torch.tanh(xn + r * hn)
        dr, dz = (r * (1 - r))[:, None] * (dxr + dhr), (z * (1 - z))[:, None] * (dxz + dhz)
        dcand = (1 - cand * cand)[:, None] * (dxn + dr * hn[:, None] + r[:, None] * dhn)
        dh = dz * (h - cand)[:, None] + (1 - z)[:, None] * dcand + z[:, None] * dh
        h = (1 - z) * cand + z * h
        hs.append(h)
        dhs.append(dh)
    return torch.stack(hs, 1), torch.stack(dhs, 1)


def tangent_net(source: Any) -> CharRNN | None:
    """The network a source's forward mode runs: its ``net`` when that is a plain :class:`CharRNN`
    (the CharLM's), else None (reverse mode only)."""
    net = getattr(source, "net", None)
    return net if type(net) is CharRNN else None


@torch.no_grad()
def input_jacobians(net: CharRNN, window: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
    """Forward-mode Jacobians of every state of ``net`` w.r.t. the first input of each row of ``window``.

    Args:
        net: the network (eval mode, as the caller set it: no dropout).
        window: ``[N, W]`` symbol ids; row n's state at its step δ is compared with its input at step 0.
        context: ``[N, Tc]`` symbols run before the window (the state in context), or None.
    Returns:
        name → ``[N, W, H, E]``: entry ``[n, δ]`` is ``∂s_{p+δ} / ∂e_p`` (p: the window's first step),
        exact, for every layer and state at once.
    """
    state = net(context)[1] if context is not None and context.shape[1] > 0 else None
    x = net.embedding(window)  # [N, W, E]
    n, w, e = x.shape
    dx = x.new_zeros(n, w, e, e)  # [N, W, K, I]: tangent k is the unit vector e_k on the first input
    dx[:, 0] = torch.eye(e)
    out: dict[str, Tensor] = {}
    for i, layer in enumerate(net.layers):
        s0 = state[i] if state is not None else None
        if net.cell == "lstm":
            h0, c0 = (s0[0][0], s0[1][0]) if s0 is not None else (None, None)
            x, dx, dc = lstm_tangents(layer, x, dx, h0, c0)
            out[f"layer{i + 1}.c"] = dc.transpose(-1, -2)
        else:
            x, dx = gru_tangents(layer, x, dx, s0[0] if s0 is not None else None)
        out[f"layer{i + 1}.h"] = dx.transpose(-1, -2)
    return out
