"""The count-table decoder of an n-gram LM's state: its exact signature, a known answer for the probes.

The ``"context"`` state of :class:`~memsig.models.ngram.NGramLM` takes finitely many values, so
the best decoder of it on the training text is a table: per (lag, state value), the symbol seen
most often. :func:`count_table_signature` counts that table and scores it like every probe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from memsig.models.ngram import NGramLM, lookup
from memsig.probe.signature import Signature
from memsig.probe.targets import LeftContext, lag_targets, next_symbol_counts
from memsig.states import StateBatch


def _merge(keys: list[Tensor], counts: list[Tensor]) -> None:
    """Collapse chunks of (keys ``[M_i]``, counts ``[M_i]``) in place into one: sorted distinct keys, summed counts."""
    uniq, inv = torch.unique(torch.cat(keys), return_inverse=True)
    keys[:], counts[:] = [uniq], [torch.zeros_like(uniq).index_add_(0, inv, torch.cat(counts))]


def count_table_signature(
    model: NGramLM, datamodule: Any, lags: Sequence[int], alpha: float = 0.1, meta: dict[str, Any] | None = None
) -> Signature:
    """Signature of the count-table decoder of the ``"context"`` state.

    On train, each (lag δ, state key, symbol at t−δ) is counted sparsely (sorted int64
    keys, see :meth:`NGramLM.state_keys`); the decoder answers a key's most frequent symbol
    (ties: lowest id), or the training majority symbol for a key never seen. It is the best
    decoder of the state on the training distribution, so no probe beats it when the test
    text's keys were all seen (e.g. test = train); on held-out text a probe that generalises
    across keys (a linear read-out of a slot) can beat it where keys are unseen
    (``meta["probe"]["test_unseen_rate"]``). Scored on the test positions and targets of
    :func:`~memsig.probe.targets.lag_targets`, like every probe. Cross-entropy (bits) uses
    add-``alpha`` smoothed counts, ``(c + α) / (total + α·C)``, of the key's symbols, or of
    the training prior for an unseen key (α = 0.1 balances lags inside the context, where
    smaller is better, against lags beyond it).
    """
    lags, c = list(lags), len(model.vocab)
    k, span = len(lags), model.order * len(model.vocab) ** (model.order - 1)  # span: number of possible state keys
    if k * span * c >= 2**62:
        raise ValueError(f"{k} lags x {span} state keys x {c} symbols overflow int64 keys")

    def cells(split: str) -> Iterator[tuple[StateBatch, Tensor, Tensor]]:
        """Per batch: states, (lag, key) groups ``[M]`` and targets ``[M]`` of the valid positions."""
        data, left = datamodule.dataset(split), LeftContext(max(0, max(lags)))
        for i in range(len(data)):
            batch = data[i]
            sb = model.states(batch)
            targets, valid = lag_targets(
                left.extend(split, sb.symbols, bool(batch["carry"])), sb.history, sb.mask, lags
            )
            groups = torch.arange(k) * span + model.state_keys(sb.states["context"]).cpu()[..., None]  # [B, T, K]
            yield sb, groups[valid.cpu()], targets[valid].cpu()

    keys, counts = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for _, g, y in cells("train"):
        keys.append(g * c + y)
        counts.append(torch.ones_like(g))
        if sum(map(len, keys)) > max(1 << 22, 2 * len(keys[0])):
            _merge(keys, counts)
    _merge(keys, counts)
    cell_keys, cell_counts = keys[0], counts[0]  # sorted (lag, key, symbol) cells
    group_keys, inv = torch.unique_consecutive(cell_keys // c, return_inverse=True)
    totals = torch.zeros_like(group_keys).index_add_(0, inv, cell_counts)
    top = torch.zeros_like(group_keys).scatter_reduce(0, inv, cell_counts, "amax")
    at_top = (cell_counts == top[inv]).nonzero().squeeze(1)
    first = at_top[torch.searchsorted(inv[at_top], torch.arange(len(group_keys)))]  # first argmax of each group
    best = cell_keys[first] % c
    prior_counts = torch.bincount(datamodule.ids("train").long(), minlength=c).double()
    smooth_prior = (prior_counts + alpha) / (prior_counts.sum() + alpha * c)
    majority = int(prior_counts.argmax())
    confusion = torch.zeros(k * c * c, dtype=torch.long)
    nll, unseen = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.long)
    forward = torch.zeros(c * c, dtype=torch.long)
    for sb, g, y in cells("test"):
        seen, gi = lookup(group_keys, g)
        pred = torch.where(seen, best[gi], majority)
        hit, ci = lookup(cell_keys, g * c + y)
        count = torch.where(hit, cell_counts[ci], 0).double()
        p = torch.where(seen, (count + alpha) / (totals[gi].double() + alpha * c), smooth_prior[y])
        lag = g // span
        nll += torch.zeros(k, dtype=torch.float64).index_add_(0, lag, -p.log2())
        unseen += torch.bincount(lag[~seen], minlength=k)
        confusion += torch.bincount((lag * c + y) * c + pred, minlength=k * c * c)
        forward += next_symbol_counts(sb)
    n = confusion.view(k, -1).sum(-1).clamp(min=1)
    info = {
        "probe": {
            "kind": "count_table",
            "states": ["context"],
            "lags": lags,
            "alpha": alpha,
            "train_keys": torch.bincount(group_keys // span, minlength=k).tolist(),
            "test_unseen_rate": (unseen / n).tolist(),
        },
        **(meta or {}),
    }
    return Signature(
        ["context"],
        lags,
        list(model.vocab.labels),
        confusion.view(1, k, c, c).numpy(),
        (nll / n).view(1, k).numpy(),
        (prior_counts / prior_counts.sum()).numpy(),
        forward.view(c, c).numpy(),
        info,
    )
