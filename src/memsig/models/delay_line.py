"""A state source with a known memory: a shift register over one-hot inputs.

Its state after consuming ``x_t`` is the concatenation of the one-hots of
``x_t, x_{t-1}, …, x_{t-k}`` (zeros before the stream's start), so it provably holds the
last ``k`` symbols before the current one and nothing older: a correct probe recalls
lags δ ≤ k perfectly and lags δ > k at chance. A reference point for probes, and a
template for writing a :class:`~memsig.states.StateSource` by hand.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.states import StateBatch
from memsig.vocab import Vocab


class DelayLine(nn.Module):
    """Shift register of depth ``k`` over one-hot symbols; state ``"delay"`` is ``[B, T, (k+1)·V]``.

    Carries its register across consecutive windows of a stream like a recurrent model
    (``batch["carry"]``).
    """

    def __init__(self, vocab: Vocab, k: int) -> None:
        super().__init__()
        self.vocab, self.k = vocab, k
        self.state_names = ["delay"]
        self.state_dims = {"delay": (k + 1) * len(vocab)}
        self._prev: Tensor | None = None

    @torch.no_grad()
    def states(self, batch: dict[str, Any]) -> StateBatch:
        x = batch["inputs"]
        b, t = x.shape
        v = len(self.vocab)
        onehot = F.one_hot(x, v).float()  # [B, T, V]
        prev = self._prev if batch["carry"] and self._prev is not None and self._prev.shape[0] == b else None
        if prev is None:
            prev = onehot.new_zeros(b, self.k, v)  # nothing before the stream's start
        ext = torch.cat([prev, onehot], 1)  # [B, k + T, V]
        self._prev = ext[:, ext.shape[1] - self.k :] if self.k else onehot[:, :0]
        slots = [ext[:, self.k - j : self.k - j + t] for j in range(self.k + 1)]  # x_{t-j}
        return StateBatch({"delay": torch.cat(slots, -1)}, x, batch["mask"], batch["history"])
