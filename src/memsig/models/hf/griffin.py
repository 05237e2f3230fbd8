"""Griffin (Hawk: recurrent blocks only): its states are the residual stream and the RG-LRU state
after every block.

The blocks are ``RecurrentGemmaForCausalLM``'s own modules (``block_types: [recurrent]``), run by
memsig so that the state starts from a carried one: the temporal block's causal convolution over
the carried inputs, then the model's RG-LRU, whose output at t is its state h_t,

    h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x_t),

with the gates a_t (recurrence) and i_t (input) computed from x_t. At the first position of a
fresh state (a stream's start) the RG-LRU resets, as the model does at position 0: h_t = i_t ⊙ x_t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig

from memsig.models.hf.base import HFNet, LayerState


class Griffin(HFNet):
    """``RecurrentGemmaForCausalLM`` from ``config``, recurrent blocks only; states (l = 1 nearest
    the input): ``layer{l}.residual`` ``[B, T, hidden_size]``, the residual stream after block l
    (the last before the final norm), and ``layer{l}.rglru`` ``[B, T, lru_width]``, the RG-LRU state."""

    def __init__(self, config: PretrainedConfig) -> None:
        if set(config.block_types) != {"recurrent"}:
            raise ValueError(
                f"model.config.block_types={config.block_types}: memsig reads Griffin's recurrent blocks only "
                "(its local-attention blocks keep a window, not a state); set model.config.block_types: [recurrent]"
            )
        super().__init__(config)
        self.state_names = [f"layer{i + 1}.{k}" for i in range(len(self.blocks)) for k in ("residual", "rglru")]
        self.state_dims = {
            n: config.hidden_size if n.endswith("residual") else config.lru_width for n in self.state_names
        }

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.model.layers

    def zero_state(self, batch_size: int) -> list[LayerState]:
        """Per layer: the convolution's last inputs ``[B, W, K - 1]`` and the RG-LRU state ``[B, W]``."""
        c = self.config
        w = self.model.model.embed_tokens.weight
        return [
            (w.new_zeros(batch_size, c.lru_width, c.conv1d_width - 1), w.new_zeros(batch_size, c.lru_width))
            for _ in self.blocks
        ]

    def run_embedded(
        self, emb: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        # the RG-LRU resets where its position is 0: at the first symbol of a fresh state only
        positions = torch.arange(emb.shape[1], device=emb.device).expand(emb.shape[:2]) + (state is not None)
        state = state if state is not None else self.zero_state(emb.shape[0])
        body = self.model.model
        h = emb * body.normalizer.type(emb.dtype)
        final, states = [], {}
        for i, layer in enumerate(self.blocks):
            block, (conv_prev, lru_prev) = layer.temporal_block, state[i]
            x = layer.temporal_pre_norm(h)
            x_hist = torch.cat([conv_prev, block.linear_x(x).transpose(1, 2)], dim=-1)
            conv = F.conv1d(x_hist, block.conv_1d.weight, block.conv_1d.bias, groups=x_hist.shape[1])
            block.rg_lru.recurrent_states = lru_prev
            lru = block.rg_lru(conv.transpose(1, 2), positions)
            block.rg_lru.recurrent_states = None  # the state lives here, not in the module
            h = h + block.linear_out(lru * block.act_fn(block.linear_y(x)))
            h = h + layer.mlp_block(layer.channel_pre_norm(h))
            final.append((x_hist[..., x_hist.shape[-1] - conv_prev.shape[-1] :], lru[:, -1]))
            if return_states:
                states[f"layer{i + 1}.residual"], states[f"layer{i + 1}.rglru"] = h, lru
        logits = self.model.lm_head(body.final_norm(h))
        cap = self.config.logits_soft_cap
        return torch.tanh(logits / cap) * cap, final, states
