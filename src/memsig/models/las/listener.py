"""The listener: a pyramidal stack of bidirectional LSTMs over acoustic frames.

Before layer l, ``reductions[l]`` consecutive frames are concatenated, so layer l runs at
``frame_rate / prod(reductions[:l+1])``. With the default ``(2, 2, 2)`` and 10 ms feature
frames, layer 1 runs at 50 Hz (frames stacked ×2), layer 2 at 25 Hz and layer 3 at 12.5 Hz.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def stack_frames(x: Tensor, lengths: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Concatenate ``r`` consecutive frames: ``[B, T, F] -> [B, T // r, r·F]``; a trailing
    remainder of fewer than ``r`` frames is dropped. Lengths become ``max(1, lengths // r)``."""
    if r == 1:
        return x, lengths
    b, t, f = x.shape
    keep = t // r
    if keep == 0:
        raise ValueError(f"an utterance of {t} frames is too short for a ×{r} frame reduction")
    return x[:, : keep * r].reshape(b, keep, r * f), (lengths // r).clamp(min=1)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the valid part of every sequence of ``x [B, T, D]`` in time; padding stays at the
    end (its own inverse)."""
    pos = torch.arange(x.shape[1], device=x.device)[None]
    n = lengths.to(x.device)[:, None]
    idx = torch.where(pos < n, n - 1 - pos, pos)
    return x.gather(1, idx[..., None].expand_as(x))


class BiLSTM(nn.Module):
    """A bidirectional LSTM over padded sequences: a forward LSTM on ``x`` and a forward LSTM on
    each sequence reversed within its length. Exact for every valid frame without packing, so
    both directions run the fused kernel (a packed sequence's backward pass costs O(T²) on CPU).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.fwd = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.bwd = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x [B, T, D]``, ``lengths [B]`` → ``[B, T, 2H]`` (forward half, then backward half)."""
        back, _ = self.bwd(reverse_padded(x, lengths))
        return torch.cat([self.fwd(x)[0], reverse_padded(back, lengths)], -1)


class PyramidalListener(nn.Module):
    """Stacked BiLSTMs with frame reduction before each layer.

    Args:
        input_size: feature dimension F.
        hidden_size: units per direction (a layer's output is ``2 · hidden_size``).
        reductions: frames concatenated before each layer (one entry per layer, ≥ 3 layers
            for the reference's LAS).
        dropout: on every layer's output but the last.
    """

    def __init__(
        self, input_size: int, hidden_size: int, reductions: Sequence[int] = (2, 2, 2), dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not reductions or any(int(r) < 1 for r in reductions):
            raise ValueError(f"listener reductions must be positive integers, one per layer; got {list(reductions)}")
        self.reductions = [int(r) for r in reductions]
        self.hidden_size = hidden_size
        sizes = [input_size, *([2 * hidden_size] * (len(self.reductions) - 1))]
        self.layers = nn.ModuleList(BiLSTM(i * r, hidden_size) for i, r in zip(sizes, self.reductions))
        self.dropout = nn.Dropout(dropout)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def reduction(self, layer: int) -> int:
        """Input frames per frame of ``layer`` (1-based)."""
        return math.prod(self.reductions[:layer])

    def forward(self, x: Tensor, lengths: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Run every layer.

        Args:
            x: ``[B, T, F]`` features, zero padded.
            lengths: ``[B]`` valid frames.

        Returns:
            Per layer, ``(outputs [B, T_l, 2H], lengths_l [B])``; the forward direction is
            ``outputs[..., :H]``, the backward one ``outputs[..., H:]``.
        """
        out = []
        for i, lstm in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            x, lengths = stack_frames(x, lengths, self.reductions[i])
            x = lstm(x, lengths)
            out.append((x, lengths))
        return out
