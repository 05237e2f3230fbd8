"""Attention of the speller over the listener's last layer: content-based or location-aware.

Content-based (Bahdanau): ``e_{i,j} = wᵀ tanh(W q_i + V h_j + b)``. Location-aware
(Chorowski et al. 2015) adds ``U f_{i,j}``, where ``f_i = F * α_{i-1}`` convolves the previous
attention weights, which keeps the alignment moving forward through the utterance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Additive attention.

    Args:
        query_size: size of the speller state that queries.
        key_size: size of a listener frame.
        size: attention dimension (the size of the query vector ``W q_i``).
        location: add location features of the previous weights.
        channels, kernel: location convolution (``kernel`` odd).
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        size: int = 128,
        location: bool = True,
        channels: int = 10,
        kernel: int = 31,
    ) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"attention kernel must be odd; got {kernel}")
        self.key = nn.Linear(key_size, size)
        self.query = nn.Linear(query_size, size, bias=False)
        self.score = nn.Linear(size, 1, bias=False)
        self.location = location
        if location:
            self.conv = nn.Conv1d(1, channels, kernel, padding=kernel // 2, bias=False)
            self.loc = nn.Linear(channels, size, bias=False)

    def project(self, memory: Tensor) -> Tensor:
        """Keys of the listener frames, computed once per utterance: ``[B, T, K] -> [B, T, size]``."""
        return self.key(memory)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, previous: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One attention step.

        Args:
            query: ``[B, Q]`` speller state.
            keys: ``[B, T, size]`` from :meth:`project`.
            memory: ``[B, T, K]`` listener frames.
            mask: ``[B, T]`` True at real frames.
            previous: ``[B, T]`` the previous step's weights.

        Returns:
            ``context [B, K]``, ``weights [B, T]`` and the query vector ``[B, size]``.
        """
        q = self.query(query)
        e = keys + q.unsqueeze(1)
        if self.location:
            e = e + self.loc(self.conv(previous.unsqueeze(1)).transpose(1, 2))
        scores = self.score(torch.tanh(e)).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = F.softmax(scores, dim=-1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights, q


def guide_penalty(weights: Tensor, centres: Tensor, widths: Tensor) -> Tensor:
    """Guided-attention loss (after Tachibana et al. 2018): the mean over guided decoding steps
    of the attention mass far from where the step should look,
    ``Σ_j α_{i,j} (1 − exp(−(j − c_i)² / 2 w_i²))``.

    Args:
        weights: ``[B, S, T]`` attention weights of every step.
        centres: ``[B, S]`` the frame each step should attend to (NaN: not guided).
        widths: ``[B, S]`` or broadcastable, in frames: how far from the centre is free.
    """
    j = torch.arange(weights.shape[-1], device=weights.device, dtype=weights.dtype)
    guided = ~centres.isnan()
    c = torch.nan_to_num(centres, nan=0.0)[..., None]
    penalty = 1 - torch.exp(-((j - c) ** 2) / (2 * widths[..., None] ** 2))
    return (weights * penalty).sum(-1)[guided].sum() / guided.sum().clamp(min=1)


def diagonal_centres(steps: Tensor, frames: Tensor, length: int) -> Tensor:
    """``[B, length]`` the diagonal: step i of S reads near frame ``i/S · T`` (speech is read at a
    roughly steady pace); NaN past each utterance's ``steps``."""
    i = torch.arange(length, device=steps.device, dtype=torch.float)[None]
    centres = i / steps[:, None] * frames[:, None]
    return centres.masked_fill(i >= steps[:, None], float("nan"))
