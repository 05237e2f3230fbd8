"""xLSTM (mLSTM blocks): its states are the residual stream and the matrix memory C and
normaliser n after every block.

The blocks are ``xLSTMForCausalLM``'s own modules, run with one part replaced: the mLSTM kernel,
by :class:`MatrixMemoryScan`, the recurrence written out step by step so that every position's
state is kept (the model's chunkwise kernel returns the last state only). Per head, with input
and forget gate pre-activations ĩ_t, f̃_t and the stabiliser m_t,

    m_t = max(log σ(f̃_t) + m_{t-1}, ĩ_t),   f_t = exp(log σ(f̃_t) + m_{t-1} - m_t),   i_t = exp(ĩ_t - m_t)
    C_t = f_t C_{t-1} + i_t k_t v_tᵀ,   n_t = f_t n_{t-1} + i_t k_t
    h_t = C_tᵀ q̂_t / (max(|n_t · q̂_t|, exp(-m_t)) + ε),   q̂_t = q_t / √d_qk

C_t and n_t are kept as the model keeps them: scaled by exp(-m_t).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig

from memsig.models.hf.base import HFNet, LayerState


class MatrixMemoryScan(nn.Module):
    """The mLSTM recurrence (module docstring), in place of the model's kernel; with ``keep`` set,
    it also returns C and n of every position after the final state."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.keep = False

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        igate: Tensor,
        fgate: Tensor,
        c_initial: Tensor | None = None,
        n_initial: Tensor | None = None,
        m_initial: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Args: ``query``, ``key`` ``[B, NH, T, DK]``, ``value`` ``[B, NH, T, DV]``, the gates'
        pre-activations ``[B, NH, T]``, the initial C ``[B, NH, DK, DV]``, n ``[B, NH, DK]`` and m
        ``[B, NH, 1]`` (None: zeros). Returns h ``[B, NH, T, DV]`` and (C, n, m), then, with
        ``keep``, every C ``[B, NH, T, DK, DV]`` and n ``[B, NH, T, DK]``."""
        b, nh, _, dk = query.shape
        c = c_initial if c_initial is not None else query.new_zeros(b, nh, dk, value.shape[-1])
        n = n_initial if n_initial is not None else query.new_zeros(b, nh, dk)
        m = m_initial if m_initial is not None else query.new_zeros(b, nh, 1)
        hs, cs, ns = [], [], []
        steps = zip(*(t.unbind(2) for t in (query * dk**-0.5, key, value, igate, fgate)))
        for q, k, v, i, f in steps:
            f_log = F.logsigmoid(f).unsqueeze(-1)
            m_new = torch.maximum(f_log + m, i.unsqueeze(-1))
            f_act, i_act = torch.exp(f_log + m - m_new), torch.exp(i.unsqueeze(-1) - m_new)
            c = f_act.unsqueeze(-1) * c + i_act.unsqueeze(-1) * (k.unsqueeze(-1) * v.unsqueeze(-2))
            n, m = f_act * n + i_act * k, m_new
            denominator = torch.maximum((q * n).sum(-1, keepdim=True).abs(), torch.exp(-m)) + self.eps
            hs.append(torch.einsum("bhd,bhdv->bhv", q, c) / denominator)
            if self.keep:
                cs.append(c)
                ns.append(n)
        kept = (torch.stack(cs, dim=2), torch.stack(ns, dim=2)) if self.keep else ()
        return torch.stack(hs, dim=2), (c, n, m, *kept)


class XLSTM(HFNet):
    """``xLSTMForCausalLM`` from ``config``; states (l = 1 nearest the input):

    ``layer{l}.residual`` ``[B, T, hidden_size]``
        the residual stream after block l (the last before the final norm).
    ``layer{l}.C`` ``[B, T, NH·DK·DV]``
        the matrix memory, every head's DK × DV matrix flattened row by row, head after head.
    ``layer{l}.n`` ``[B, T, NH·DK]``
        the normaliser.
    """

    def __init__(self, config: PretrainedConfig) -> None:
        qk, v = config.hidden_size * config.qk_dim_factor, config.hidden_size * config.v_dim_factor
        if (qk, v) != (config.qk_dim, config.v_dim):
            raise ValueError(
                f"model.config: hidden_size·qk_dim_factor = {qk:g} and hidden_size·v_dim_factor = {v:g} must be "
                "multiples of 64 (the model's cache rounds them up to one, its layers do not); "
                "change hidden_size, qk_dim_factor or v_dim_factor"
            )
        super().__init__(config)
        for block in self.blocks:
            block.mlstm_layer.mlstm_backend = MatrixMemoryScan(config.eps)
        heads, dk, dv = config.num_heads, config.qk_head_dim, config.v_head_dim
        dims = {"residual": config.hidden_size, "C": heads * dk * dv, "n": heads * dk}
        self.state_names = [f"layer{i + 1}.{k}" for i in range(len(self.blocks)) for k in dims]
        self.state_dims = {name: dims[name.split(".")[1]] for name in self.state_names}

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.backbone.blocks

    def zero_state(self, batch_size: int) -> list[LayerState]:
        """Per layer: C ``[B, NH, DK, DV]``, n ``[B, NH, DK]``, m ``[B, NH, 1]``."""
        c, w = self.config, self.model.backbone.embeddings.weight
        heads, dk = c.num_heads, c.qk_head_dim
        return [
            (
                w.new_zeros(batch_size, heads, dk, c.v_head_dim),
                w.new_zeros(batch_size, heads, dk),
                w.new_zeros(batch_size, heads, 1),
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
            block.mlstm_layer.mlstm_backend.keep = return_states
            h, (c, n, m, *kept) = block(h, state[i])
            final.append((c, n, m))
            if return_states:
                states[f"layer{i + 1}.residual"] = h
                states[f"layer{i + 1}.C"], states[f"layer{i + 1}.n"] = (s.transpose(1, 2).flatten(2) for s in kept)
        logits = self.model.lm_head(self.model.backbone.out_norm(h))
        cap = self.config.output_logit_soft_cap
        return (torch.tanh(logits / cap) * cap if cap else logits), final, states
