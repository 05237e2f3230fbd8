"""RWKV (v4): its states are the residual stream, the WKV numerator and denominator, and the token
shift after every block.

The blocks are ``RwkvForCausalLM``'s own modules; memsig runs them itself (:meth:`Rwkv.forward`):
the token mixing, and the WKV recurrence written out (:func:`wkv_scan`) so that every position's
state is kept. (The model's own one-token path mixes a batch of several rows wrongly: its token
shift ``[B, H]`` broadcasts against the input ``[B, 1, H]``; memsig's never takes that path.)
Per channel, with decay w = -exp(time_decay) and bonus u = time_first, the state after t is

    a_t = e^w a_{t-1} + e^{k_t} v_t,    b_t = e^w b_{t-1} + e^{k_t},
    wkv_t = (a_{t-1} + e^{u + k_t} v_t) / (b_{t-1} + e^{u + k_t})

kept, as the model keeps it, scaled by e^{-p_t} (p_t the running maximum exponent) so that it
never overflows: the states ``wkv_num`` = a_t e^{-p_t} and ``wkv_den`` = b_t e^{-p_t}. The
token shift is the last normalised input of the time-mixing and of the channel-mixing half.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig

from memsig.models.hf.base import HFNet, LayerState

NO_EXPONENT = -1e30  # the running maximum exponent before any symbol (as the model's own cache starts)


def wkv_scan(
    time_decay: Tensor, time_first: Tensor, key: Tensor, value: Tensor, state: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The WKV recurrence (module docstring) over ``key``, ``value`` ``[B, T, A]`` from ``state``
    ``(num, den, exponent)`` (each ``[B, A]``).

    Returns wkv ``[B, T, A]``, the final state, and the scaled numerators and denominators of every
    position ``([B, T, A], [B, T, A])``.
    """
    w = -torch.exp(time_decay)
    num, den, p = state
    out, nums, dens = [], [], []
    for k, v in zip(key.unbind(1), value.unbind(1)):
        q = torch.maximum(p, k + time_first)
        e_prev, e_new = torch.exp(p - q), torch.exp(k + time_first - q)
        out.append((e_prev * num + e_new * v) / (e_prev * den + e_new))
        q = torch.maximum(p + w, k)
        e_prev, e_new = torch.exp(p + w - q), torch.exp(k - q)
        num, den, p = e_prev * num + e_new * v, e_prev * den + e_new, q
        nums.append(num)
        dens.append(den)
    return torch.stack(out, dim=1), (num, den, p), (torch.stack(nums, dim=1), torch.stack(dens, dim=1))


def shifted(x: Tensor, last: Tensor) -> Tensor:
    """``[B, T, H]`` the input one step back: ``last`` ``[B, H]`` (the carried token shift) first."""
    return torch.cat([last.unsqueeze(1), x[:, :-1]], dim=1)


def mix(x: Tensor, prev: Tensor, ratio: Tensor) -> Tensor:
    """RWKV's token mixing: ``ratio`` of the current input ``x``, the rest of the previous ``prev``."""
    return x * ratio + prev * (1 - ratio)


class Rwkv(HFNet):
    """``RwkvForCausalLM`` from ``config`` (``rescale_every: 0``); states (l = 1 nearest the input):

    ``layer{l}.residual`` ``[B, T, hidden_size]``
        the residual stream after block l (the last before the final norm).
    ``layer{l}.wkv_num``, ``layer{l}.wkv_den`` ``[B, T, attention_hidden_size]``
        the WKV numerator and denominator, scaled (module docstring).
    ``layer{l}.shift`` ``[B, T, 2·hidden_size]``
        the token shift: the time-mixing's normalised input, then the channel-mixing's.
    """

    def __init__(self, config: PretrainedConfig) -> None:
        if config.rescale_every != 0:
            raise ValueError(
                f"model.config.rescale_every={config.rescale_every}: the model would rescale its weights in "
                "place whenever it switches to eval mode; set model.config.rescale_every: 0"
            )
        super().__init__(config)
        kinds = {"residual": config.hidden_size, "wkv_num": 0, "wkv_den": 0, "shift": 2 * config.hidden_size}
        attention = config.attention_hidden_size or config.hidden_size
        self.state_names = [f"layer{i + 1}.{k}" for i in range(len(self.blocks)) for k in kinds]
        self.state_dims = {n: kinds[n.split(".")[1]] or attention for n in self.state_names}

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.rwkv.blocks

    def zero_state(self, batch_size: int) -> list[LayerState]:
        """Per layer: the two token shifts ``[B, H]`` and the WKV state (num, den, exponent) ``[B, A]``."""
        w = self.model.rwkv.embeddings.weight
        shift = w.new_zeros(batch_size, self.config.hidden_size)
        wkv = w.new_zeros(batch_size, self.blocks[0].attention.attention_hidden_size)
        return [(shift, shift, wkv, wkv, wkv + NO_EXPONENT) for _ in self.blocks]

    def run_embedded(
        self, emb: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        state = state if state is not None else self.zero_state(emb.shape[0])
        h = emb
        final, states = [], {}
        for i, block in enumerate(self.blocks):
            if i == 0:
                h = block.pre_ln(h)
            time_shift, channel_shift, *wkv_state = state[i]
            x = block.ln1(h)
            att, ffn = block.attention, block.feed_forward
            xs = shifted(x, time_shift)
            k, v = att.key(mix(x, xs, att.time_mix_key)), att.value(mix(x, xs, att.time_mix_value))
            wkv, wkv_final, (nums, dens) = wkv_scan(att.time_decay, att.time_first, k, v, tuple(wkv_state))
            h = h + att.output(torch.sigmoid(att.receptance(mix(x, xs, att.time_mix_receptance))) * wkv)
            y = block.ln2(h)
            ys = shifted(y, channel_shift)
            value = ffn.value(torch.square(torch.relu(ffn.key(mix(y, ys, ffn.time_mix_key)))))
            h = h + torch.sigmoid(ffn.receptance(mix(y, ys, ffn.time_mix_receptance))) * value
            final.append((x[:, -1], y[:, -1], *wkv_final))
            if return_states:
                n = f"layer{i + 1}"
                states |= {f"{n}.residual": h, f"{n}.wkv_num": nums, f"{n}.wkv_den": dens}
                states[f"{n}.shift"] = torch.cat([x, y], dim=-1)
        return self.model.head(self.model.rwkv.ln_out(h)), final, states
