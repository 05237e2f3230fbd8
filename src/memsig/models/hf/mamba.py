"""Mamba: its states are the residual stream and the selective SSM's state after every block.

The blocks are ``MambaForCausalLM``'s own modules, run here by :func:`mixer_scan`, the slow (pure
torch) path written out so that it starts from a carried state and keeps the SSM state of every
position, rebuilt from the discretised parameters: per channel e and state dimension n,

    s_t[e, n] = exp(Δ_t[e] A[e, n]) s_{t-1}[e, n] + Δ_t[e] B_t[n] x_t[e],    y_t[e] = Σ_n s_t[e, n] C_t[n] + D[e] x_t[e]

with Δ_t = softplus(dt_proj(·)) and x_t the causal convolution of the block's input projection.
The state carried between windows is each layer's convolution input history and s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig

from memsig.models.hf.base import HFNet, LayerState


def mixer_scan(mixer: nn.Module, h: Tensor, state: LayerState, keep_states: bool) -> tuple[Tensor, Tensor, LayerState]:
    """A ``MambaMixer`` on the normalised block input ``h`` ``[B, T, d]`` from ``state``.

    Args:
        mixer: the block's mixer (its in/x/dt/out projections, conv1d, A_log, D).
        h: ``[B, T, d]`` the normalised input.
        state: ``(conv [B, E, K - 1], ssm [B, E, N])``: the last K - 1 inputs of the convolution
            and the SSM state (E = intermediate_size, N = state_size, K = conv_kernel).
        keep_states: also return the SSM state of every position (else an empty tensor).
    Returns:
        the mixer's output ``[B, T, d]``, the SSM states ``[B, T, E, N]``, and the final state.
    """
    conv_prev, s = state
    x, gate = mixer.in_proj(h).chunk(2, dim=-1)
    x_hist = torch.cat([conv_prev, x.transpose(1, 2)], dim=-1)
    x = mixer.act(F.conv1d(x_hist, mixer.conv1d.weight, mixer.conv1d.bias, groups=x.shape[-1])).transpose(1, 2)
    dt, b, c = mixer.x_proj(x).split([mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1)
    dt = F.softplus(mixer.dt_proj(dt))
    decay = torch.exp(dt.unsqueeze(-1) * -torch.exp(mixer.A_log))  # [B, T, E, N]
    drive = (dt * x).unsqueeze(-1) * b.unsqueeze(2)  # [B, T, E, N]
    ys, kept = [], []
    # unbind, not decay[:, t]: the gradient of each slice would fill a whole [B, T, E, N] tensor
    for decay_t, drive_t, c_t in zip(decay.unbind(1), drive.unbind(1), c.unbind(1)):
        s = decay_t * s + drive_t
        ys.append(torch.einsum("ben,bn->be", s, c_t))
        if keep_states:
            kept.append(s)
    y = (torch.stack(ys, dim=1) + x * mixer.D) * F.silu(gate)
    states = torch.stack(kept, dim=1) if keep_states else x.new_empty(0)
    return mixer.out_proj(y), states, (x_hist[..., x_hist.shape[-1] - conv_prev.shape[-1] :], s)


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
            mixed, ssm, last = mixer_scan(block.mixer, block.norm(h), state[i], return_states)
            h = h + mixed
            final.append(last)
            if return_states:
                states[f"layer{i + 1}.residual"], states[f"layer{i + 1}.ssm"] = h, ssm.flatten(2)
        return self.model.lm_head(self.model.backbone.norm_f(h)), final, states
