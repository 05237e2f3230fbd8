"""Mamba: its states are the residual stream and the selective SSM's state after every block.

The blocks are ``MambaForCausalLM``'s own modules, run here by :func:`mixer_scan`, the slow (pure
torch) path written out so that it starts from a carried state and keeps the SSM state of every
position, rebuilt from the discretised parameters: per channel e and state dimension n,

    s_t[e, n] = exp(Δ_t[e] A[e, n]) s_{t-1}[e, n] + Δ_t[e] B_t[n] x_t[e],    y_t[e] = Σ_n s_t[e, n] C_t[n] + D[e] x_t[e]

with Δ_t = softplus(dt_proj(·)) and x_t the causal convolution of the block's input projection.
The state carried between windows is each layer's convolution input history and s. The scan
itself (:class:`SelectiveScan`) steps through the symbols with a hand-written backward, in the
memory of one step at a time, about twice as fast to train on CPU as the slow path's form.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig

from memsig.models.hf.base import HFNet, LayerState


class SelectiveScan(torch.autograd.Function):
    """The selective scan of one layer, a symbol at a time, each step's ``[B, E, N]`` tensors made
    and used while they fit in cache (the ``[B, T, E, N]`` decay and drive of the textbook form are
    never built, nor their gradients: on CPU their memory traffic is most of a step).

    Forward: ``s_t = exp(Δ_t ⊗ A) ⊙ s_{t-1} + (Δ_t x_t) ⊗ B_t`` from ``s_0``; returns every ``s_t``
    ``[B, T, E, N]``. Backward, carrying ``ḡ_t`` (the gradient reaching s_t, from its own output and
    from s_{t+1}) down t: ``∂/∂(Δx)_t = ḡ_t B_t``, ``∂/∂B_t = Σ_e ḡ_t (Δx)_t``, and with
    ``a_t = ḡ_t ⊙ s_{t-1} ⊙ exp(Δ_t ⊗ A)``: ``∂/∂Δ_t = a_t A``, ``∂/∂A = Σ_{b,t} a_t Δ_t``; then
    ``ḡ_{t-1} += exp(Δ_t ⊗ A) ⊙ ḡ_t``.

    Args: ``dt`` and ``dtx`` ``[B, T, E]`` (Δ and Δ·x), ``b`` ``[B, T, N]``, ``a`` ``[E, N]`` (A,
    negative), ``s0`` ``[B, E, N]``.
    """

    @staticmethod
    def forward(ctx: Any, dt: Tensor, dtx: Tensor, b: Tensor, a: Tensor, s0: Tensor) -> Tensor:
        states, s = dtx.new_empty(*dtx.shape, b.shape[-1]), s0
        for t in range(dt.shape[1]):
            s = torch.addcmul(dtx[:, t, :, None] * b[:, t, None, :], torch.exp(dt[:, t, :, None] * a), s)
            states[:, t] = s
        ctx.save_for_backward(dt, dtx, b, a, s0, states)
        return states

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        dt, dtx, b, a, s0, states = ctx.saved_tensors
        g_dt, g_dtx, g_b = torch.empty_like(dt), torch.empty_like(dtx), torch.empty_like(b)
        g_a, back = torch.zeros_like(a), torch.zeros_like(s0)
        for t in reversed(range(dt.shape[1])):
            back = back + grad[:, t]
            g_dtx[:, t] = (back * b[:, t, None, :]).sum(-1)
            g_b[:, t] = (back * dtx[:, t, :, None]).sum(1)
            decay = torch.exp(dt[:, t, :, None] * a)
            before = states[:, t - 1] if t > 0 else s0
            at = back * before * decay
            g_dt[:, t] = (at * a).sum(-1)
            g_a += (at * dt[:, t, :, None]).sum(0)
            back = back * decay
        return g_dt, g_dtx, g_b, g_a, back


def mixer_scan(mixer: nn.Module, h: Tensor, state: LayerState) -> tuple[Tensor, Tensor, LayerState]:
    """A ``MambaMixer`` on the normalised block input ``h`` ``[B, T, d]`` from ``state``.

    Args:
        mixer: the block's mixer (its in/x/dt/out projections, conv1d, A_log, D).
        h: ``[B, T, d]`` the normalised input.
        state: ``(conv [B, E, K - 1], ssm [B, E, N])``: the last K - 1 inputs of the convolution
            and the SSM state (E = intermediate_size, N = state_size, K = conv_kernel).
    Returns:
        the mixer's output ``[B, T, d]``, the SSM states ``[B, T, E, N]`` (which the output reads),
        and the final state.
    """
    conv_prev, s = state
    x, gate = mixer.in_proj(h).chunk(2, dim=-1)
    x_hist = torch.cat([conv_prev, x.transpose(1, 2)], dim=-1)
    x = mixer.act(F.conv1d(x_hist, mixer.conv1d.weight, mixer.conv1d.bias, groups=x.shape[-1])).transpose(1, 2)
    dt, b, c = mixer.x_proj(x).split([mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1)
    dt = F.softplus(mixer.dt_proj(dt))
    states = SelectiveScan.apply(dt, dt * x, b, -torch.exp(mixer.A_log), s)
    y = (torch.einsum("bten,btn->bte", states, c) + x * mixer.D) * F.silu(gate)
    return mixer.out_proj(y), states, (x_hist[..., x_hist.shape[-1] - conv_prev.shape[-1] :], states[:, -1])


class Mamba(HFNet):
    """``MambaForCausalLM`` from ``config``; states (l = 1 nearest the input):

    ``layer{l}.residual`` ``[B, T, hidden_size]``
        the residual stream after block l (the last before the final norm).
    ``layer{l}.ssm`` ``[B, T, E·N]``
        the SSM state s_t, the whole E × N matrix flattened channel by channel (``s[e, n]`` at
        ``e·N + n``).
    """

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        n_layers = len(self.blocks)
        self.state_names = [f"layer{i + 1}.{k}" for i in range(n_layers) for k in ("residual", "ssm")]
        ssm = config.intermediate_size * config.state_size
        self.state_dims = {n: ssm if n.endswith("ssm") else config.hidden_size for n in self.state_names}

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.backbone.layers

    def zero_state(self, batch_size: int) -> list[LayerState]:
        c = self.config
        w = self.model.backbone.embeddings.weight
        return [
            (
                w.new_zeros(batch_size, c.intermediate_size, c.conv_kernel - 1),
                w.new_zeros(batch_size, c.intermediate_size, c.state_size),
            )
            for _ in self.blocks
        ]

    def run_embedded(
        self, emb: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        state = state if state is not None else self.zero_state(emb.shape[0])
        h = emb
        final, states = [], {}
        for i, block in enumerate(self.blocks):
            mixed, ssm, last = mixer_scan(block.mixer, block.norm(h), state[i])
            h = h + mixed
            final.append(last)
            if return_states:
                states[f"layer{i + 1}.residual"], states[f"layer{i + 1}.ssm"] = h, ssm.flatten(2)
        return self.model.lm_head(self.model.backbone.norm_f(h)), final, states
