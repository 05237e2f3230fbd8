"""A GPT-2 style Transformer: its states are the residual stream after every block.

It has no recurrent state: a window is its whole context (its absolute positions start at 0 in
every window), so the state at t has seen the t symbols before it in the window, and ``history``
is capped there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig

from memsig.models.hf.base import HFNet, LayerState


class Transformer(HFNet):
    """``GPT2LMHeadModel`` from ``config``; states ``layer{l}.residual`` ``[B, T, n_embd]``, the
    residual stream after block l (l = 1 nearest the input; the last before the final norm)."""

    recurrent = False

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.state_names = [f"layer{i + 1}.residual" for i in range(len(self.blocks))]
        self.state_dims = dict.fromkeys(self.state_names, config.n_embd)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.transformer.h

    def history(self, history: Tensor) -> Tensor:
        """The stream's ``history`` ``[B, T]`` capped at the window: t symbols precede position t."""
        return torch.minimum(history, torch.arange(history.shape[1], device=history.device))

    def run_embedded(
        self, emb: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        if emb.shape[1] > self.config.n_positions:
            raise ValueError(
                f"a window of {emb.shape[1]} symbols is longer than the Transformer's context "
                f"(model.config.n_positions={self.config.n_positions}); raise n_positions or lower data.seq_len"
            )
        states: dict[str, Tensor] = {}
        hooks = [
            block.register_forward_hook(self._recorder(states, name))
            for block, name in zip(self.blocks, self.state_names)
            if return_states
        ]
        try:
            logits = self.model(inputs_embeds=emb, use_cache=False).logits
        finally:
            for hook in hooks:
                hook.remove()
        return logits, [], states

    @staticmethod
    def _recorder(states: dict[str, Tensor], name: str) -> Any:
        """A forward hook that keeps a block's output (its residual stream) under ``name``."""

        def record(module: nn.Module, args: Any, output: Tensor | tuple[Tensor, ...]) -> None:
            states[name] = output[0] if isinstance(output, tuple) else output

        return record
