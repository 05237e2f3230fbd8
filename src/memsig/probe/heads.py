"""K decoders (MLPs with ReLU) over one shared input, evaluated as batched matmuls.

For the K lags of one state, the first layers of all K decoders are one GEMM
``[N, D] @ [D, K·W]``; deeper layers and the outputs are one batched matmul each
(``[K, N, W] @ [K, W, W]``). Every head keeps its own best weights and best dev loss as
buffers, so per-head model selection survives a checkpoint and a resume.
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
    """

    def __init__(self, num_heads: int, in_dim: int, width: int, depth: int, num_classes: int,
                 dropout_state: float = 0.0, dropout_hidden: float = 0.0) -> None:
        super().__init__()
        self.k, self.width, self.depth, self.c = num_heads, width, depth if width else 0, num_classes
        self.dropout_state, self.dropout_hidden = dropout_state, dropout_hidden
        first_out = width if width else num_classes
        self.w_in = _uniform((in_dim, num_heads * first_out), in_dim)
        self.b_in = _uniform((num_heads * first_out,), in_dim)
        self.w_hidden = nn.ParameterList(_uniform((num_heads, width, width), width) for _ in range(max(0, self.depth - 1)))
        self.b_hidden = nn.ParameterList(_uniform((num_heads, 1, width), width) for _ in range(max(0, self.depth - 1)))
        if width:
            self.w_out = _uniform((num_heads, width, num_classes), width)
            self.b_out = _uniform((num_heads, 1, num_classes), width)
        self.register_buffer("best_loss", torch.full((num_heads,), math.inf))
        for name, p in self.named_parameters():
            self.register_buffer("best_" + name.replace(".", "_"), p.detach().clone())

    def _dropout(self, x: Tensor, p: float) -> Tensor:
        return F.dropout(x, p, True) if self.training and p > 0 else x

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, D]`` -> logits ``[K, N, C]``."""
        n = x.shape[0]
        h = torch.addmm(self.b_in, self._dropout(x, self.dropout_state), self.w_in)  # [N, K*W]: all first layers, one GEMM
        if not self.width:
            return h.view(n, self.k, self.c).transpose(0, 1)
        h = self._dropout(F.relu(h).view(n, self.k, self.width).transpose(0, 1), self.dropout_hidden)  # [K, N, W]
        for w, b in zip(self.w_hidden, self.b_hidden):
            h = self._dropout(F.relu(torch.baddbmm(b, h, w)), self.dropout_hidden)
        return torch.baddbmm(self.b_out, h, self.w_out)

    def _head_views(self) -> list[tuple[Tensor, Tensor, int]]:
        """(param, best buffer, head axis) with the head axis made explicit."""
        out = []
        for name, p in self.named_parameters():
            best = getattr(self, "best_" + name.replace(".", "_"))
            if name in ("w_in", "b_in"):
                shape = (*p.shape[:-1], self.k, p.shape[-1] // self.k)
                out.append((p.view(shape), best.view(shape), p.dim() - 1))
            else:
                out.append((p, best, 0))
        return out

    @torch.no_grad()
    def keep_best(self, dev_loss: Tensor) -> Tensor:
        """Store the current weights of heads whose ``dev_loss [K]`` beats their best; returns the improved mask."""
        improved = dev_loss < self.best_loss
        self.best_loss.copy_(torch.where(improved, dev_loss, self.best_loss))
        for p, best, axis in self._head_views():
            sel = improved.view(*(1,) * axis, -1, *(1,) * (p.dim() - axis - 1))
            best.copy_(torch.where(sel, p, best))
        return improved

    @torch.no_grad()
    def load_best(self) -> None:
        """Put every head's best weights in place (heads never evaluated keep their current ones)."""
        seen = torch.isfinite(self.best_loss)
        for p, best, axis in self._head_views():
            sel = seen.view(*(1,) * axis, -1, *(1,) * (p.dim() - axis - 1))
            p.copy_(torch.where(sel, best, p))

    @property
    def flops_per_position(self) -> int:
        """Multiply-adds ×2 of one forward pass for one position (all heads)."""
        d = self.w_in.shape[0]
        w_or_c = self.width or self.c
        f = d * self.k * w_or_c + (self.k * self.width * self.width) * max(0, self.depth - 1)
        f += self.k * self.width * self.c if self.width else 0
        return 2 * f
