"""K decoders (MLPs with ReLU) over one shared input, evaluated as batched matmuls.

For the K lags of one state, the first layers of all K decoders are one GEMM
``[K·W, D] @ [D, N]`` (the states enter transposed, which BLAS reads in place); deeper
layers and the outputs are one batched matmul each (``[K, W, W] @ [K, W, N]``). Working
"feature-major" keeps every intermediate contiguous per head, so no step copies a
transposed tensor, and the logits come out as ``[K, C, N]`` — the layout
``F.cross_entropy`` takes directly. Every head keeps its own best weights, best dev loss and
stopping state (evaluations without improvement, converged, steps trained) as buffers, so
per-head model selection and stopping survive a checkpoint and a resume. A forward pass may
compute a subset of the heads: converged heads cost no more FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
        hidden_layers: hidden layers per decoder (≥ 1 when ``width > 0``).
        num_classes: C.
        dropout_state: dropout on the input state (one mask shared by the K heads).
        dropout_hidden: dropout after every hidden layer.
        residual: start with every output 0 (the last layer zeroed): a decoder whose logits are
            added to given log-probabilities starts exactly at them.

    Every parameter and best-weight buffer has the head axis first (``[K, ...]``).
    """

    def __init__(
        self,
        num_heads: int,
        in_dim: int,
        width: int,
        hidden_layers: int,
        num_classes: int,
        dropout_state: float = 0.0,
        dropout_hidden: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.k, self.width, self.hidden_layers, self.c = num_heads, width, hidden_layers if width else 0, num_classes
        self.dropout_state, self.dropout_hidden = dropout_state, dropout_hidden
        first_out = width if width else num_classes
        self.w_in = _uniform((num_heads * first_out, in_dim), in_dim)
        self.b_in = _uniform((num_heads * first_out, 1), in_dim)
        self.w_hidden = nn.ParameterList(
            _uniform((num_heads, width, width), width) for _ in range(max(0, self.hidden_layers - 1))
        )
        self.b_hidden = nn.ParameterList(
            _uniform((num_heads, width, 1), width) for _ in range(max(0, self.hidden_layers - 1))
        )
        if width:
            self.w_out = _uniform((num_heads, num_classes, width), width)
            self.b_out = _uniform((num_heads, num_classes, 1), width)
        if residual:
            for p in (self.w_out, self.b_out) if width else (self.w_in, self.b_in):
                nn.init.zeros_(p)
        for name, p in self.named_parameters():
            self.register_buffer("best_" + name.replace(".", "_"), p.detach().clone())
        self.register_buffer("best_loss", torch.full((num_heads,), math.inf))
        self.register_buffer("ref_loss", torch.full((num_heads,), math.inf))  # at the last real improvement
        self.register_buffer("bad_evals", torch.zeros(num_heads, dtype=torch.long))
        self.register_buffer("checks", torch.zeros(num_heads, dtype=torch.long))  # since the last lr drop
        self.register_buffer("converged", torch.zeros(num_heads, dtype=torch.bool))
        self.register_buffer("lr_scale", torch.ones(num_heads))  # lowered at each plateau (see record)
        self.register_buffer("plateaus", torch.zeros(num_heads, dtype=torch.long))
        self.register_buffer("steps", torch.zeros(num_heads, dtype=torch.long))

    def _dropout(self, x: Tensor, p: float) -> Tensor:
        return F.dropout(x, p, True) if self.training and p > 0 else x

    def forward(self, x: Tensor, heads: Tensor | None = None) -> Tensor:
        """``x [N, D]`` -> logits ``[K', C, N]`` of the heads ``heads`` (``[K']`` indices; None: all K)."""
        n = x.shape[0]
        w_in, b_in = self.w_in, self.b_in
        if heads is not None:
            w_in = w_in.view(self.k, -1, w_in.shape[1])[heads].flatten(0, 1)
            b_in = b_in.view(self.k, -1, 1)[heads].flatten(0, 1)
        k = self.k if heads is None else len(heads)
        h = torch.addmm(b_in, w_in, self._dropout(x, self.dropout_state).T)  # [K'·W, N]: one GEMM
        if not self.width:
            return h.view(k, self.c, n)
        h = self._dropout(F.relu(h).view(k, self.width, n), self.dropout_hidden)  # [K', W, N]
        for w, b in zip(self.w_hidden, self.b_hidden):
            w, b = (w, b) if heads is None else (w[heads], b[heads])
            h = self._dropout(F.relu(torch.baddbmm(b, w, h)), self.dropout_hidden)
        w_out, b_out = (self.w_out, self.b_out) if heads is None else (self.w_out[heads], self.b_out[heads])
        return torch.baddbmm(b_out, w_out, h)

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
    def record(
        self,
        dev_loss: Tensor,
        patience: int,
        min_rel_improvement: float,
        min_improvement: float,
        anneals: int = 0,
        anneal_factor: float = 0.1,
        patience_fraction: float = 0.0,
    ) -> None:
        """Stopping rule after a dev check, ``dev_loss [K]`` (NaN for heads not evaluated).

        Every head keeps its best weights (:meth:`keep_best`). A check *improves* a head when its
        loss is below the loss of the head's last improving check by ``max(min_rel_improvement ·
        that loss, min_improvement)``. A head without an improving check for ``max(patience,
        patience_fraction × its checks so far)`` checks in a row has reached a plateau (a window
        that grows with training: a head that gained nothing over the last part of its training
        would gain little from as much again): the first ``anneals`` times its learning rate is scaled
        by ``anneal_factor`` and it goes on from its best weights; after that it has converged.
        Comparing with the last improving check, not with the best so far, lets many small gains
        add up to an improvement; the absolute floor stops heads whose loss creeps towards 0 on
        exact targets.
        """
        seen = ~torch.isnan(dev_loss) & ~self.converged
        loss = torch.where(seen, dev_loss, self.ref_loss)
        margin = torch.clamp(self.ref_loss * min_rel_improvement, min=min_improvement)
        significant = seen & (torch.isinf(self.ref_loss) | (loss < self.ref_loss - margin))
        self.keep_best(torch.where(seen, dev_loss, self.best_loss))
        self.ref_loss.copy_(torch.where(significant, loss, self.ref_loss))
        self.bad_evals.copy_(torch.where(seen, torch.where(significant, 0, self.bad_evals + 1), self.bad_evals))
        self.checks += seen.long()
        window = torch.clamp(torch.ceil(patience_fraction * self.checks.double()).long(), min=patience)
        plateau = self.bad_evals >= window
        anneal = plateau & (self.plateaus < anneals)
        self.converged |= plateau & ~anneal
        if anneal.any():
            self.lr_scale.copy_(torch.where(anneal, self.lr_scale * anneal_factor, self.lr_scale))
            self.plateaus += anneal.long()
            self.bad_evals.masked_fill_(anneal, 0)
            self.checks.masked_fill_(anneal, 0)
            for p, best in self._head_views():
                p.copy_(torch.where(anneal[:, None], best, p))

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
        return 2 * self.k * self.width * (self.width * max(0, self.hidden_layers - 1) + self.c) if self.width else 0


class HeadAdam(torch.optim.Optimizer):
    """Adam over :class:`BatchedMLPHeads`, with each head's own learning rate: ``lr · lr_scale[k]``,
    and no update at all for a converged head (its moments stop too).

    One parameter group per heads module; every parameter has the head axis first (``[K·…, …]``
    viewed as ``[K, -1]``). Bias correction counts each head's own updates (``heads.steps``), so a
    head's schedule does not depend on when the others stopped.
    """

    def __init__(
        self,
        head_sets: Sequence[BatchedMLPHeads],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.head_sets = list(head_sets)
        groups = [{"params": list(h.parameters()), "head_set": i} for i, h in enumerate(self.head_sets)]
        super().__init__(groups, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            heads = self.head_sets[group["head_set"]]
            b1, b2 = group["betas"]
            active = (~heads.converged).float()[:, None]  # [K, 1]
            t = heads.steps.clamp(min=1).double()[:, None]
            step = (group["lr"] * heads.lr_scale[:, None] * active).double()
            step = (step * torch.sqrt(1 - b2**t) / (1 - b1**t)).float()  # Adam's bias corrections
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.view(heads.k, -1)
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p.view(heads.k, -1)
                state = self.state[p]
                if not state:
                    state["m"], state["v"] = torch.zeros_like(g), torch.zeros_like(g)
                m, v = state["m"], state["v"]
                m.mul_(torch.where(active > 0, b1, 1.0)).add_(g * (1 - b1) * active)
                v.mul_(torch.where(active > 0, b2, 1.0)).add_(g * g * (1 - b2) * active)
                p.view(heads.k, -1).sub_(step * m / (v.sqrt() + group["eps"]))
        return loss
