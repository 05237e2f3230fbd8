"""Control states: what a probe finds without the trained model's memory.

``random:<state>`` is the state of a randomly initialised copy of the model (memory the
architecture gives for free); ``shuffled:<state>`` is the real state moved to another real
position of the same batch (it says nothing about its own targets, so its recall must sit at
the majority rate). :class:`~memsig.probe.multihead.MultiHeadProbe` builds both as extra
heads; :class:`ControlledSource` offers them to any probe through the state interface.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from memsig.states import StateBatch, StateSource

CONTROLS = ("random", "shuffled")


def random_copy(source: StateSource, seed: int = 0) -> StateSource:
    """A copy of ``source`` with every parameter re-initialised (``reset_parameters``)."""
    if not isinstance(source, nn.Module):
        raise TypeError("the 'random' control needs a source that is an nn.Module")
    clone = copy.deepcopy(source)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in clone.modules():
            if hasattr(m, "reset_parameters") and m is not clone:
                m.reset_parameters()
    return clone


def check_controls(controls: Sequence[str]) -> list[str]:
    """``controls`` as a list; ValueError for an unknown one."""
    if set(controls) - set(CONTROLS):
        raise ValueError(f"probe.controls may hold {' and '.join(CONTROLS)}; got {list(controls)}")
    return list(controls)


def control_spec(control: str, spec: str) -> str:
    """The control's name of a probed state: ``random:a`` (``random:a+b`` for ``a+b``)."""
    return f"{control}:{spec}"


def state_parts(spec: str) -> list[str]:
    """The exposed state names a probed state reads: ``random:a+b`` → ``[random:a, random:b]``."""
    kind, _, base = spec.rpartition(":")
    return [f"{kind}:{p}" if kind else p for p in base.split("+")]


class ControlledSource(nn.Module):
    """``source`` with its states plus ``<control>:<state>`` for each control (:data:`CONTROLS`).

    Args:
        source: the model (a random copy needs an ``nn.Module``).
        controls: ``random`` and/or ``shuffled``.
        seed: seeds the random copy and the shuffling (one permutation per batch, in order).
    """

    def __init__(self, source: StateSource, controls: Sequence[str], seed: int = 0) -> None:
        super().__init__()
        self.source = source
        self.controls = check_controls(controls)
        self.random = random_copy(source, seed) if "random" in self.controls else None
        self.vocab = source.vocab
        self.state_names = [
            *source.state_names,
            *(control_spec(c, n) for c in self.controls for n in source.state_names),
        ]
        self.state_dims = {name: source.state_dims[name.rpartition(":")[2]] for name in self.state_names}
        self._gen = torch.Generator().manual_seed(seed)

    def states(self, batch: dict[str, Any]) -> StateBatch:
        sb = self.source.states(batch)
        extra = {}
        if self.random is not None:
            extra |= {control_spec("random", n): x for n, x in self.random.states(batch).states.items()}
        if "shuffled" in self.controls:
            real = sb.mask.flatten().nonzero().squeeze(1)
            moved = real[torch.randperm(len(real), generator=self._gen).to(real.device)]
            for n, x in sb.states.items():
                flat = x.flatten(0, 1).clone()
                flat[real] = flat[moved]
                extra[control_spec("shuffled", n)] = flat.view_as(x)
        return dataclasses.replace(sb, states={**sb.states, **extra})
