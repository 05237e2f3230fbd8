"""Character n-gram LM with interpolated Kneser-Ney smoothing, also a state source.

Probabilities (Chen & Goodman's interpolated Kneser-Ney, one discount ``D_k`` per order k)::

    P_k(w | h) = (max(c_k(hw) - D_k, 0) + D_k · N1+(h·) · P_{k-1}(w | h')) / Σ_u c_k(hu)

h' is h without its oldest symbol, ``N1+(h·)`` the number of distinct symbols that follow
h. The highest order n counts occurrences; lower orders count *continuations*: the
number of distinct symbols seen just before ``hw`` (the start of the training text
counts as one more distinct left neighbour, so every seen n-gram has a count). P_0 is
uniform over the vocabulary, so every probability is > 0. A context never seen followed
by a symbol passes its lower order through unchanged: the model conditions on the
longest suffix of its context seen in training, whose length L ≤ n − 1 is the *used
context* (the back-off length). ``D_k = n1 / (n1 + 2·n2)`` from the order's counts of
counts (0.5 where the order has no count of 1), unless given. N-grams are base-V
integers (``Σ w_i · V^(k-i)``, most recent symbol lowest) held in sorted tables.

State (:class:`~memsig.states.StateSource`) ``"context"``, ``[B, T, (n-1)·V + n]``: after
consuming ``x_t``, slot j = 0 … n−2 holds the one-hot of ``x_{t-j}`` where j < L and
zeros beyond, then the one-hot of L. Under memsig's lag convention the state covers lags
δ = 0 … n−2 (δ = 0: the symbol just consumed), so recall at those lags is 100 %
wherever no back-off happened, by construction (the paper counts this window as δ ≤ n−1
from the predicted symbol). :func:`memsig.probe.count_table.count_table_signature` decodes it
exactly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.data.io import atomic_write_bytes
from memsig.models.checkpoint import CheckpointError, _meta, _read
from memsig.states import StateBatch
from memsig.vocab import Vocab

TABLES = ("keys", "counts", "ctx_keys", "ctx_total", "ctx_types")  # per order k: buffers f"{name}{k}"


def lookup(table: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Where each entry of ``query`` sits in the sorted ``table``: ``(found, index)``, both shaped like query."""
    idx = torch.searchsorted(table, query).clamp(max=len(table) - 1)
    return table[idx] == query, idx


class NGramLM(nn.Module):
    """Interpolated Kneser-Ney character LM of ``order`` n (see module docstring); :meth:`fit` before use.

    Args:
        vocab: symbol set (or its ``to_dict()``).
        order: n ≥ 2, the context is n − 1 symbols.
        discount: one D for every order, or None to estimate one per order from counts of counts.
    """

    def __init__(
        self, vocab: Vocab | dict[str, Any], order: int = 5, discount: float | list[float] | None = None
    ) -> None:
        super().__init__()
        self.vocab = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(dict(vocab))
        v = len(self.vocab)
        if order < 2 or v**order >= 2**62:
            raise ValueError(f"model.order must be >= 2 with V^order < 2^62 (V = {v}); got {order}")
        if discount is not None and not 0 < discount <= 1:
            raise ValueError(f"model.discount must be in (0, 1] or null (estimated); got {discount}")
        self.order, self.discount = order, None if discount is None else float(discount)
        self.state_names = ["context"]
        self.state_dims = {"context": (order - 1) * v + order}
        self.register_buffer(
            "discounts", torch.full((0 if discount is None else order,), self.discount or 0.0, dtype=torch.float64)
        )  # per order, lowest first
        for k in range(1, order + 1):
            for name in TABLES:
                self.register_buffer(f"{name}{k}", torch.zeros(0, dtype=torch.long))
        self._prev: Tensor | None = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in self._buffers:  # table sizes come from the corpus: adopt the saved shapes
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ------------------------------------------------------------------ counting
    @torch.no_grad()
    def fit(self, ids: Tensor) -> NGramLM:
        """Count every order on a training sequence ``ids`` ``[N]`` (N ≥ order) and set the discounts."""
        ids, n, v = ids.long().flatten().to(self.discounts.device), self.order, len(self.vocab)
        if len(ids) < n:
            raise ValueError(f"an order-{n} model needs at least {n} training symbols; got {len(ids)}")
        grams = [ids]  # grams[k-1][i]: key of the k-gram starting at i
        for k in range(2, n + 1):
            grams.append(grams[-1][:-1] * v + ids[k - 1 :])
        discounts, upper = [], ids
        for k in range(n, 0, -1):
            raw, raw_counts = torch.unique(grams[k - 1], return_counts=True)
            if k == n:
                keys, counts = raw, raw_counts
            else:  # distinct left neighbours of each k-gram, the text's start counting as one
                keys, counts = torch.unique(torch.cat([upper % v**k, grams[k - 1][:1]]), return_counts=True)
            ctx_keys, inv, types = torch.unique_consecutive(keys // v, return_inverse=True, return_counts=True)
            total = torch.zeros_like(ctx_keys).index_add_(0, inv, counts)
            for name, t in zip(TABLES, (keys, counts, ctx_keys, total, types)):
                setattr(self, f"{name}{k}", t)
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            discounts.append(n1 / (n1 + 2 * n2) if n1 else 0.5)
            upper = raw
        if self.discount is None:
            self.discounts = torch.tensor(discounts[::-1], dtype=torch.float64, device=ids.device)
        return self

    def _context_keys(self, context: Tensor, length: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """Per order k = 1 … n: ``(k, key [P] of the last k−1 symbols, seen [P], index into the order's context table)``."""
        if not len(self.ctx_keys1):
            raise RuntimeError("NGramLM has no counts yet: call fit(ids) or load a saved model")
        context, length = context.long().to(self.discounts.device), length.long().to(self.discounts.device)
        v, key = len(self.vocab), torch.zeros_like(length)
        for k in range(1, self.order + 1):
            if k > 1:
                key = key + context[:, -(k - 1)] * v ** (k - 2)
            found, ci = lookup(getattr(self, f"ctx_keys{k}"), key)
            yield k, key, found & (length >= k - 1), ci

    def _probs(self, context: Tensor, length: Tensor, symbols: Tensor) -> Tensor:
        """``[P, W]`` float64 probabilities of ``symbols`` ``[P, W]`` after ``context``/``length`` (see next_log_probs)."""
        v = len(self.vocab)
        p = torch.full(symbols.shape, 1.0 / v, dtype=torch.float64, device=self.discounts.device)
        for k, key, seen, ci in self._context_keys(context, length):
            keys, counts, _, total, types = (getattr(self, f"{name}{k}") for name in TABLES)
            found, gi = lookup(keys, key[:, None] * v + symbols.to(key.device))
            c, d = torch.where(found, counts[gi], 0).double(), self.discounts[k - 1]
            p = torch.where(seen[:, None], ((c - d).clamp(min=0) + d * types[ci, None] * p) / total[ci, None], p)
        return p

    def next_log_probs(self, context: Tensor, length: Tensor, symbols: Tensor | None = None) -> Tensor:
        """Log-probabilities ``[P, V]`` (float64) of the next symbol, or ``[P, W]`` of the given ones.

        Args:
            context: ``[P, n-1]`` ids in reading order, right-aligned (``context[:, -1]`` is
                the symbol just seen); only the last ``length`` entries are read.
            length: ``[P]`` available context, 0 … n−1.
            symbols: ``[P, W]`` ids to score (the same values as those columns of the full
                distribution, at W/V of its cost); None scores every symbol.
        """
        if symbols is None:
            symbols = torch.arange(len(self.vocab), device=context.device).expand(len(context), -1)
        return self._probs(context, length, symbols).log()

    def used_context(self, context: Tensor, length: Tensor) -> Tensor:
        """``[P]`` long: the longest L ≤ ``length`` whose last-L-symbol suffix of ``context`` was seen as a context."""
        seen = torch.stack([s for k, _, s, _ in self._context_keys(context, length) if k > 1], -1)
        return seen.long().cumprod(-1).sum(-1)

    def _contexts(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Context ``[N-1, n-1]`` and its length ``[N-1]`` for predicting each of ``ids[1:]``."""
        ids = ids.long().flatten()
        padded = torch.cat([ids.new_zeros(self.order - 1), ids])
        length = torch.arange(1, len(ids), device=ids.device).clamp(max=self.order - 1)
        return padded.unfold(0, self.order - 1, 1)[1 : len(ids)], length

    @torch.no_grad()
    def log_likelihood(self, ids: Tensor) -> Tensor:
        """``[N-1]`` float64 natural-log probabilities of ``ids[1:]`` (the first n−1 with shorter contexts)."""
        context, length = self._contexts(ids)
        return self._probs(context, length, ids[1:, None].long()).squeeze(1).log()

    def evaluate(self, ids: Tensor) -> dict[str, float]:
        """Mean loss (nats/char), bpc and perplexity of a held-out sequence ``ids`` ``[N]``."""
        loss = -float(self.log_likelihood(ids).mean())
        return {"loss": loss, "bpc": loss / math.log(2), "ppl": math.exp(loss), "symbols": len(ids) - 1}

    # --------------------------------------------------------------- state source
    @torch.no_grad()
    def states(self, batch: dict[str, Any]) -> StateBatch:
        """The used context as stacked one-hots (module docstring) and the next-symbol log-probabilities."""
        x = batch["inputs"].long().to(self.discounts.device)
        b, t = x.shape
        n, v = self.order, len(self.vocab)
        prev = self._prev if batch["carry"] and self._prev is not None and self._prev.shape[0] == b else None
        reach = torch.arange(1, t + 1, device=x.device) + (n - 2 if prev is not None else 0)
        ext = torch.cat([x.new_zeros(b, n - 2) if prev is None else prev, x], 1)  # [B, n-2+T]
        self._prev = ext[:, ext.shape[1] - (n - 2) :]
        context = ext.unfold(1, n - 1, 1).flatten(0, 1)  # [B·T, n-1], last = x_t
        length = torch.minimum(batch["history"].to(x.device) + 1, reach).clamp(max=n - 1).flatten()
        used = self.used_context(context, length)
        slots = F.one_hot(context.flip(-1), v) * (torch.arange(n - 1, device=x.device) < used[:, None])[..., None]
        state = torch.cat([slots.flatten(1), F.one_hot(used, n)], -1).float().view(b, t, -1)
        logits = self.next_log_probs(context, length).float().view(b, t, v)
        return StateBatch({"context": state}, batch["inputs"], batch["mask"], batch["history"], next_logits=logits)

    def kernel_params(self, name: str) -> int:
        """``D·(D + V)``, so the probe's ``width: auto`` (``ceil(P / (D + C))``) gives the state dimension D."""
        d = self.state_dims[name]
        return d * (d + len(self.vocab))

    def state_keys(self, state: Tensor) -> Tensor:
        """``[...]`` int64 key of each ``"context"`` state ``[..., D]``: ``L·V^(n-1) + Σ_{j<L} x_{t-j}·V^j``."""
        n, v = self.order, len(self.vocab)
        used = state[..., -n:].argmax(-1)
        ids = state[..., : (n - 1) * v].unflatten(-1, (n - 1, v)).argmax(-1)  # empty slots give 0
        return used * v ** (n - 1) + (ids * v ** torch.arange(n - 1, device=state.device)).sum(-1)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write the model atomically in the checkpoint layout :func:`~memsig.models.load_model` reads."""
        meta = {"model_class": f"{type(self).__module__}.{type(self).__qualname__}", "vocab": self.vocab.to_dict()}
        hp = {"vocab": self.vocab.to_dict(), "order": self.order, "discount": self.discount}
        buf = io.BytesIO()
        torch.save({"memsig": meta, "hyper_parameters": hp, "state_dict": self.state_dict()}, buf)
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> NGramLM:
        """Restore a model written by :meth:`save`; :class:`CheckpointError` for a missing or foreign file."""
        checkpoint = _read(path)
        meta, mine = _meta(checkpoint, f"checkpoint {path}"), f"{cls.__module__}.{cls.__qualname__}"
        if meta["model_class"] != mine:
            raise CheckpointError(
                f"checkpoint {path} holds a {meta['model_class']}, not a {mine}; "
                "load it with memsig.models.load_model or save an n-gram model there"
            )
        model = cls(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()
