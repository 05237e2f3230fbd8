"""K decoders (MLPs with ReLU) over one shared input, evaluated as batched matmuls.

For the K lags of one state, the first layers of all K decoders are one GEMM
``[K·W, D] @ [D, N]`` (the states enter transposed, which BLAS reads in place); deeper
layers and the outputs are one batched matmul each (``[K, W, W] @ [K, W, N]``). Working
"feature-major" keeps every intermediate contiguous per head, so no step copies a
transposed tensor, and the logits come out as ``[K, C, N]`` — the layout
``F.cross_entropy`` takes directly. Every head keeps its own best weights and best dev
loss as buffers, so per-head model selection survives a checkpoint and a resume.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class BatchedMLPHeads(nn.Module):
    """K independent MLP decoders ``D -> W (-> W)* -> C`` over the same input.

    Args:
        num_heads: K.
        in_dim: D, the state size.
        width: W, hidden units per decoder (0: linear decoders, ``D -> C``).
        depth: hidden layers per decoder (≥ 1 when ``width > 0``).
        num_classes: C.
        dropout_state: dropout on the input state (one mask shared by the K heads).
        dropout_hidden: dropout after every hidden layer.

    Every parameter and best-weight buffer has the head axis first (``[K, ...]``).
    """

    def __init__(
        self,
        num_heads: int,
        in_dim: int,
        width: int,
        depth: int,
        num_classes: int,
        dropout_state: float = 0.0,
        dropout_hidden: float = 0.0,
    ) -> None:
        super().__init__()
        self.k, self.width, self.depth, self.c = num_heads, width, depth if width else 0, num_classes
        self.dropout_state, self.dropout_hidden = dropout_state, dropout_hidden
        first_out = width if width else num_classes
        self.w_in = _uniform((num_heads * first_out, in_dim), in_dim)
        self.b_in = _uniform((num_heads * first_out, 1), in_dim)
        self.w_hidden = nn.ParameterList(
            _uniform((num_heads, width, width), width) for _ in range(max(0, self.depth - 1))
        )
        self.b_hidden = nn.ParameterList(_uniform((num_heads, width, 1), width) for _ in range(max(0, self.depth - 1)))
        if width:
            self.w_out = _uniform((num_heads, num_classes, width), width)
            self.b_out = _uniform((num_heads, num_classes, 1), width)
        self.register_buffer("best_loss", torch.full((num_heads,), math.inf))
        for name, p in self.named_parameters():
            self.register_buffer("best_" + name.replace(".", "_"), p.detach().clone())

    def _dropout(self, x: Tensor, p: float) -> Tensor:
        return F.dropout(x, p, True) if self.training and p > 0 else x

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, D]`` -> logits ``[K, C, N]``."""
        n = x.shape[0]
        h = torch.addmm(self.b_in, self.w_in, self._dropout(x, self.dropout_state).T)  # [K·W, N]: one GEMM
        if not self.width:
            return h.view(self.k, self.c, n)
        h = self._dropout(F.relu(h).view(self.k, self.width, n), self.dropout_hidden)  # [K, W, N]
        for w, b in zip(self.w_hidden, self.b_hidden):
            h = self._dropout(F.relu(torch.baddbmm(b, w, h)), self.dropout_hidden)
        return torch.baddbmm(self.b_out, self.w_out, h)

    def _head_views(self) -> list[tuple[Tensor, Tensor]]:
        """(param, best buffer), both viewed as ``[K, rest]``."""
        return [
            (p.view(self.k, -1), getattr(self, "best_" + name.replace(".", "_")).view(self.k, -1))
            for name, p in self.named_parameters()
        ]

    @torch.no_grad()
    def keep_best(self, dev_loss: Tensor) -> Tensor:
        """Store the current weights of heads whose ``dev_loss [K]`` beats their best; returns the improved mask."""
        improved = dev_loss < self.best_loss
        self.best_loss.copy_(torch.where(improved, dev_loss, self.best_loss))
        for p, best in self._head_views():
            best.copy_(torch.where(improved[:, None], p, best))
        return improved

    @torch.no_grad()
    def load_best(self) -> None:
        """Put every head's best weights in place (heads never evaluated keep their current ones)."""
        seen = torch.isfinite(self.best_loss)[:, None]
        for p, best in self._head_views():
            p.copy_(torch.where(seen, best, p))

    @property
    def flops_per_position(self) -> int:
        """FLOPs (2 per multiply-add) of one forward pass for one position, all heads."""
        return self._first_flops + self._rest_flops

    @property
    def train_flops_per_position(self) -> int:
        """FLOPs of one training step per position: forward, then the weight gradients of
        every layer and the input gradients of all but the first (the frozen state needs none)."""
        return 2 * self._first_flops + 3 * self._rest_flops

    @property
    def _first_flops(self) -> int:
        return 2 * self.w_in.numel()

    @property
    def _rest_flops(self) -> int:
        return 2 * self.k * self.width * (self.width * max(0, self.depth - 1) + self.c) if self.width else 0
