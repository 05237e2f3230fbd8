"""The one interface between models and everything that analyses them.

A model (or a user's own module, or a test's delay line) is a :class:`StateSource`:
given a batch it returns a :class:`StateBatch` of named state sequences aligned with the
discrete symbols that were fed in. The probe, the signature, the plots, state gradients
and exporters only ever see this interface.

Alignment convention: ``states[name][b, t]`` is the state *after* consuming
``symbols[b, t]``. So the symbol at lag δ of position t is ``symbols[b, t - δ]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from memsig.vocab import Vocab


@dataclass
class StateBatch:
    """Frozen states of one batch.

    Attributes:
        states: name -> ``[B, T, D]`` float tensor, e.g. ``"layer1.c"``, ``"layer1.h"``.
        symbols: ``[B, T]`` long, the input symbol consumed at each position.
        mask: ``[B, T]`` bool, True at real positions (False at padding).
        history: ``[B, T]`` long, how many symbols before position t the state has seen
            in this stream (0 at the start of a reset segment or of a split). A recall
            target at lag δ exists where ``history >= δ``; symbols before the window
            (carried state) count, so ``history`` can exceed t.
        next_logits: optional ``[B, T, V]``, the model's own prediction of the symbol at
            t + 1 (for the forward-prediction accuracy shown beside a signature).
    """

    states: dict[str, Tensor]
    symbols: Tensor
    mask: Tensor
    history: Tensor
    next_logits: Tensor | None = None

    def __post_init__(self) -> None:
        b, t = self.symbols.shape
        for name, s in self.states.items():
            if s.dim() != 3 or s.shape[:2] != (b, t):
                raise ValueError(f"state {name!r} has shape {tuple(s.shape)}; expected [{b}, {t}, D]")
        for name in ("mask", "history"):
            if getattr(self, name).shape != (b, t):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}; expected [{b}, {t}]")


@runtime_checkable
class StateSource(Protocol):
    """Anything that exposes named per-position states for a batch.

    ``states`` must run frozen: eval mode, no gradient, no parameter updates. A source
    may also offer ``kernel_params(name) -> int`` (parameters of the recurrent kernel and
    input projection behind a state), which sizes the probe's ``width: auto``.
    """

    vocab: Vocab
    state_names: list[str]
    state_dims: dict[str, int]

    def states(self, batch: dict[str, Any]) -> StateBatch: ...


@runtime_checkable
class GradientSource(StateSource, Protocol):
    """A :class:`StateSource` whose states are differentiable in its input embeddings: what
    state gradients (:mod:`memsig.analysis.state_gradients`) need.

    ``embed(inputs [B, T]) -> [B, T, E]`` embeds symbol ids; ``embedded_states(emb, context,
    repeat)`` returns the states ``[R·B, T, D]`` by name of the embedded inputs ``emb``
    ``[R·B, T, E]`` (R = ``repeat``), differentiable in ``emb``, where row ``r·B + b`` follows
    the symbols ``context[b]`` (``[B, Tc]``, run once, without gradient; ``None``: from the
    initial state). Rows must not interact.
    """

    def embed(self, inputs: Tensor) -> Tensor: ...

    def embedded_states(self, emb: Tensor, context: Tensor | None = None, repeat: int = 1) -> dict[str, Tensor]: ...
