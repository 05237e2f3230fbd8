"""The speller: an attention LSTM decoder emitting graphemes, one step at a time.

Step i reads the previous grapheme ``y_{i-1}`` (``<sos>`` at i = 0) and the previous
context ``c_{i-1}``, updates the LSTM stack to ``s_i``, queries the listener with ``s_i``
(query vector ``W s_i``) to get the context ``c_i``, and predicts ``y_i`` (or ``<eos>``)
from ``[s_i, c_i]``. Output classes are the vocab's symbols then ``<eos>``; ``<sos>`` is
an input only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from memsig.models.las.attention import Attention


@dataclass
class SpellerState:
    """Decoder state of a batch (or of the hypotheses of a beam)."""

    h: list[Tensor]  # per layer [B, H]
    c: list[Tensor]  # per layer [B, H]
    context: Tensor  # [B, K]
    weights: Tensor  # [B, T] the last attention weights
    keys: Tensor  # [B, T, A]
    memory: Tensor  # [B, T, K]
    mask: Tensor  # [B, T]

    def select(self, index: Tensor) -> SpellerState:
        """The rows ``index`` (``[B']`` long) of every tensor."""
        pick = {f.name: getattr(self, f.name) for f in fields(self)}
        return SpellerState(**{k: [x[index] for x in v] if isinstance(v, list) else v[index] for k, v in pick.items()})


@dataclass
class SpellerTrace:
    """What a teacher-forced pass recorded at every step i: ``[B, S, ·]`` each."""

    h: list[Tensor]
    c: list[Tensor]
    query: Tensor
    weights: Tensor  # [B, S, T]


class Speller(nn.Module):
    """Args:
    num_classes: output classes (symbols + ``<eos>``); ``<sos>`` is id ``num_classes``.
    embedding_size, hidden_size, num_layers: the grapheme embedding and LSTM stack.
    key_size: size of a listener frame.
    attention: the attention module (query size ``hidden_size``).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        key_size: int,
        attention: Attention,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, embedding_size)
        self.cells = nn.ModuleList(
            nn.LSTMCell(embedding_size + key_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )
        self.attention = attention
        self.output = nn.Sequential(
            nn.Linear(hidden_size + key_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, num_classes)
        )

    @property
    def sos(self) -> int:
        return self.num_classes

    def start(self, memory: Tensor, lengths: Tensor) -> SpellerState:
        """The state before step 0: zero LSTM states and context; attention on the first frame.

        Args:
            memory: ``[B, T, K]`` listener frames; lengths: ``[B]``.
        """
        b, t, k = memory.shape
        zeros = [memory.new_zeros(b, cell.hidden_size) for cell in self.cells]
        weights = memory.new_zeros(b, t)
        weights[:, 0] = 1.0
        mask = torch.arange(t, device=memory.device)[None] < lengths.to(memory.device)[:, None]
        return SpellerState(
            list(zeros), list(zeros), memory.new_zeros(b, k), weights, self.attention.project(memory), memory, mask
        )

    def step(self, prev: Tensor, state: SpellerState) -> tuple[Tensor, SpellerState, Tensor]:
        """One decoding step.

        Args:
            prev: ``[B]`` previous grapheme ids (``sos`` at the first step).

        Returns:
            ``logits [B, num_classes]``, the new state and the query vector ``[B, A]``.
        """
        x = torch.cat([self.embedding(prev), state.context], -1)
        hs, cs = [], []
        for cell, h, c in zip(self.cells, state.h, state.c):
            h, c = cell(x, (h, c))
            hs.append(h)
            cs.append(c)
            x = h
        context, weights, query = self.attention(x, state.keys, state.memory, state.mask, state.weights)
        logits = self.output(torch.cat([x, context], -1))
        return logits, SpellerState(hs, cs, context, weights, state.keys, state.memory, state.mask), query

    def teacher_forced(
        self, memory: Tensor, lengths: Tensor, inputs: Tensor, sampling: float = 0.0, trace: bool = False
    ) -> tuple[Tensor, SpellerTrace | None]:
        """Run over given inputs (teacher forcing).

        Args:
            memory, lengths: listener frames ``[B, T, K]`` and ``[B]``.
            inputs: ``[B, S]`` — ``<sos>`` then the transcript.
            sampling: probability of feeding the model's own previous prediction instead of
                the true grapheme (scheduled sampling; training only).
            trace: also return the states, query vectors and weights of every step.

        Returns:
            ``logits [B, S, num_classes]`` and the trace (or None).
        """
        state = self.start(memory, lengths)
        logits, rec = [], []
        prev = inputs[:, 0]
        for i in range(inputs.shape[1]):
            if i and sampling > 0:
                own = logits[-1].argmax(-1).clamp(max=self.num_classes - 1)  # <eos> is never fed back
                prev = torch.where(torch.rand(prev.shape, device=prev.device) < sampling, own, inputs[:, i])
            elif i:
                prev = inputs[:, i]
            out, state, query = self.step(prev, state)
            logits.append(out)
            if trace:
                rec.append((state.h, state.c, query, state.weights))
        steps = torch.stack(logits, 1)
        if not trace:
            return steps, None
        layers = range(len(self.cells))
        return steps, SpellerTrace(
            h=[torch.stack([r[0][j] for r in rec], 1) for j in layers],
            c=[torch.stack([r[1][j] for r in rec], 1) for j in layers],
            query=torch.stack([r[2] for r in rec], 1),
            weights=torch.stack([r[3] for r in rec], 1),
        )
