"""Turn any ``nn.Module`` into a :class:`~memsig.states.StateSource` with forward hooks.

    source = HookedStateSource(my_model, vocab, {"enc1": "encoder.rnn1", "enc2": "encoder.rnn2"})
    signature = memsig.probe(source, data)

Each named submodule's output (the first tensor of a tuple output, as ``nn.LSTM`` and
``nn.GRU`` return) is recorded during one forward pass over ``batch["inputs"]`` and must
be ``[B, T, D]`` (``batch_first``) — or ``[T, B, D]`` with ``batch_first=False``.

A plain module does not carry its state from one window of a stream to the next, so the
adapter counts history only within the window (``history = t``) unless the module says
it carries state (``carries_state=True``, e.g. a wrapper that keeps its last state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from memsig.states import StateBatch
from memsig.vocab import Vocab


def _first_tensor(output: Any) -> Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(
            f"hooked module returned {type(output).__name__}; expected a tensor or a tuple starting with one"
        )
    return output


class HookedStateSource:
    """States of named submodules of any module, recorded by forward hooks.

    Args:
        module: the model (kept frozen: eval mode, no grad, during ``states``).
        vocab: the symbol set its inputs use.
        layers: state name -> dotted submodule path (as in ``module.named_modules()``).
        forward: how to run the module on ``inputs [B, T]`` (default ``module(inputs)``).
        batch_first: whether the hooked outputs are ``[B, T, D]`` (else ``[T, B, D]``).
        carries_state: whether the module carries its state across consecutive windows.
    """

    def __init__(
        self,
        module: nn.Module,
        vocab: Vocab,
        layers: dict[str, str],
        forward: Callable[[nn.Module, Tensor], Any] | None = None,
        batch_first: bool = True,
        carries_state: bool = False,
    ) -> None:
        named = dict(module.named_modules())
        missing = [p for p in layers.values() if p not in named]
        if missing:
            raise ValueError(f"module has no submodules {missing}; it has {[n for n in named if n][:20]}...")
        self.module, self.vocab, self.layers = module, vocab, dict(layers)
        self.forward = forward or (lambda m, x: m(x))
        self.batch_first, self.carries_state = batch_first, carries_state
        self.state_names = list(layers)
        self._targets = {name: named[path] for name, path in layers.items()}
        probe_batch = {
            "inputs": torch.zeros(1, 2, dtype=torch.long),
            "mask": torch.ones(1, 2, dtype=torch.bool),
            "history": torch.arange(2)[None],
            "carry": False,
        }
        self.state_dims = {k: v.shape[-1] for k, v in self.states(probe_batch).states.items()}

    @torch.no_grad()
    def states(self, batch: dict[str, Any]) -> StateBatch:
        """Run the module once and return the hooked outputs as ``[B, T, D]`` states."""
        recorded: dict[str, Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, name=name: recorded.__setitem__(name, _first_tensor(out)))
            for name, m in self._targets.items()
        ]
        was_training = self.module.training
        self.module.eval()
        try:
            self.forward(self.module, batch["inputs"])
        finally:
            for h in hooks:
                h.remove()
            self.module.train(was_training)
        states = {k: (v if self.batch_first else v.transpose(0, 1)).float() for k, v in recorded.items()}
        history = batch["history"]
        if not self.carries_state:
            history = torch.minimum(history, torch.arange(history.shape[1], device=history.device).expand_as(history))
        return StateBatch(states, batch["inputs"], batch["mask"], history)
