"""The lag convention, in one place, and the recall targets it defines.

A state ``s_t`` is the state *after* consuming the symbol ``x_t`` (see
:mod:`memsig.states`). Decoder (δ, l) reads ``s_t`` of layer l and predicts:

============  ===========================================  ========================
lag δ         target                                       exists where
============  ===========================================  ========================
δ ≥ 1         ``x_{t-δ}`` — recall of the past              ``history_t >= δ``
δ = 0         ``x_t`` — the symbol just consumed            always
δ ≤ -1        ``x_{t+|δ|}`` — forward prediction            ``t + |δ|`` is in the window
============  ===========================================  ========================

``history_t`` counts the symbols of the same stream or segment before position t, so in
the ``stream`` regime a lag may reach back past the start of the current window: the
:class:`LeftContext` keeps the last ``max_lag`` symbols of every stream from the previous
batch for exactly that. In the ``segment`` regime ``history_t = t`` and no lag crosses a
segment's start.

Targets are the input symbols by default; any aligned discrete labels (e.g. the bigram
ending at each position, :func:`bigram_labels`) work the same way.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from memsig.states import StateBatch, StateSource


def resolve_probe(
    source: StateSource, states: Sequence[str] | None, lags: Sequence[int] | None
) -> tuple[list[str], list[int]]:
    """The probed states and lags, with the defaults every probe shares, checked.

    States default to the source's cell states ``*.c`` (the paper probes LSTM cell
    states), else all of its states; ``"a+b"`` concatenates. Lags default to 1…20
    (:func:`check_lags`).
    """
    lags = check_lags(lags) if lags is not None else list(range(1, 21))
    states = list(states) if states else [s for s in source.state_names if s.endswith(".c")] or list(source.state_names)
    states = ["+".join(_default_state(source, p) for p in spec.split("+")) for spec in states]
    for part in (p for spec in states for p in spec.split("+")):
        if part not in source.state_dims:
            raise ValueError(f"probe state {part!r} is not exposed by the model; it has {source.state_names}")
    return states, lags


def check_lags(lags: Any) -> list[int]:
    """``lags`` as a list of distinct integers (the lag convention: module table), or a ValueError
    naming the form ``probe.lags`` takes — Hydra passes ``probe.lags=abc`` as a string and
    ``probe.lags=5`` as a bare integer."""
    example = "e.g. 'probe.lags=[1,2,3]' (δ ≥ 1 recalls the past, 0 the symbol just read, δ < 0 predicts ahead)"
    if isinstance(lags, (str, bytes)) or not isinstance(lags, Sequence):
        raise ValueError(f"probe.lags must be a list of integers; got {lags!r}: {example}")
    bad = [x for x in lags if not isinstance(x, numbers.Integral) or isinstance(x, bool)]
    if bad:
        raise ValueError(
            f"probe.lags must be a list of integers; {', '.join(map(repr, bad))} in {list(lags)} is not: {example}"
        )
    lags = [int(x) for x in lags]
    if not lags or len(set(lags)) != len(lags):
        raise ValueError(f"probe.lags must be distinct and non-empty; got {lags}: {example}")
    return lags


def lag_reach(datamodule: Any, split: str) -> tuple[int, int]:
    """``(back, ahead)``: the most symbols of history before, and of its window after, any real
    position of a split has — the longest lag and the most negative lag (−ahead) with a target there.

    Read from the split's batches (``history`` and ``mask``) without running a model. A source may
    count less history than its batches give (e.g. only the window's); its cells then come out
    unsupported (NaN), not wrong. Batches without ``history`` (the speech data: the source counts
    it) are bounded by the split's length.
    """
    data = datamodule.dataset(split)
    first = data[0] if len(data) else {}
    if "history" not in first or "mask" not in first:
        n = len(datamodule.ids(split))
        return n - 1, n - 1
    back = ahead = 0
    for i in range(len(data)):
        batch = first if i == 0 else data[i]
        mask = batch["mask"]
        if bool(mask.any()):
            back = max(back, int(batch["history"][mask].max()))
            ahead = max(ahead, int(mask.sum(1).max()) - 1)
    return back, ahead


def check_lag_reach(
    datamodule: Any, lags: Sequence[int], target: str = "symbol", splits: Sequence[str] = ("train", "dev", "test")
) -> None:
    """ValueError naming the first lag that no position of some split in ``splits`` has a target
    for (:func:`lag_reach`; a bigram target needs one more symbol of history), the longest usable
    lag (that of the split with the least reach) and the fix — before any state is computed or cached."""
    reach = {split: lag_reach(datamodule, split) for split in splits}
    short, near = min(splits, key=lambda s: reach[s][0]), min(splits, key=lambda s: reach[s][1])
    back = reach[short][0] - (target == "bigram")  # the bigram ending at t − δ needs one more symbol of history
    ahead = reach[near][1]
    for lag in lags:
        if lag > back:
            raise ValueError(
                f"probe.lags: lag {lag} reaches further back than any position of the {short} split has history "
                f"(at most {back} {target}s, in its longest stream or segment); the longest usable lag is {back}: "
                "drop the longer lags, or give each stream more text (a longer split or, in the stream regime, a "
                "lower data.batch_size)"
            )
        if -lag > ahead:
            raise ValueError(
                f"probe.lags: lag {lag} looks further ahead than any window of the {near} split holds (at most "
                f"{ahead} symbols after a position); the most negative usable lag is {-ahead}: drop the more "
                "negative lags, or use longer windows (data.seq_len)"
            )


def _default_state(source: StateSource, name: str) -> str:
    """``name`` itself if exposed; for a layer name (``layer2``, or counted from the top as Python
    indexes: ``layer-1`` is the last layer ``layer{l}``), its ``.c`` state if exposed, else its first."""
    if name in source.state_dims:
        return name
    top = re.fullmatch(r"layer-([1-9][0-9]*)", name)
    if top:
        layers = sorted({int(m[1]) for s in source.state_names if (m := re.match(r"layer([0-9]+)\.", s))})
        name = f"layer{layers[-int(top[1])]}" if int(top[1]) <= len(layers) else name
    parts = [s for s in source.state_names if s.startswith(name + ".")]
    return next((s for s in parts if s.endswith(".c")), parts[0] if parts else name)


class LeftContext:
    """The last ``size`` labels of every stream of the previous batch, per stage.

    ``extend(key, labels, carry)`` returns ``[B, size + T]`` labels: the remembered
    context (zeros where there is none — ``history`` masks those) followed by the batch.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._prev: dict[str, Tensor] = {}

    def extend(self, key: str, labels: Tensor, carry: bool) -> Tensor:
        b = labels.shape[0]
        prev = self._prev.get(key) if carry else None
        if prev is None or prev.shape[0] != b:
            prev = labels.new_zeros(b, self.size)
        ext = torch.cat([prev, labels], dim=1)
        self._prev[key] = ext[:, ext.shape[1] - self.size :]
        return ext

    def reset(self) -> None:
        self._prev.clear()


class StreamBlocks:
    """The test bootstrap's block of each position: a stretch of ``block_len`` consecutive symbols
    of one stream (a batch row, followed across batches while ``carry`` holds)."""

    def __init__(self, block_len: int) -> None:
        self.block_len = block_len
        self._streams = torch.zeros(0, dtype=torch.long)
        self._next = 0
        self._index: dict[tuple[int, int], int] = {}

    def __call__(self, history: Tensor, carry: bool, keep: Tensor) -> list[int]:
        """Block ids of the positions ``keep`` (flat indices into ``history`` ``[B, T]``)."""
        b, t = history.shape
        if not carry or len(self._streams) != b:
            self._streams = torch.arange(self._next, self._next + b)
            self._next += b
        rows = self._streams[:, None].expand(b, t).flatten()[keep]
        chunks = (history.flatten().cpu()[keep] // self.block_len).clamp(min=0)
        return [self._index.setdefault(k, len(self._index)) for k in zip(rows.tolist(), chunks.tolist())]

    @property
    def num_blocks(self) -> int:
        return len(self._index)


def lag_targets(
    ext: Tensor, history: Tensor, mask: Tensor, lags: list[int], common: bool = False
) -> tuple[Tensor, Tensor]:
    """Targets of every lag at every position.

    Args:
        ext: ``[B, C + T]`` labels, ``C = max(0, max(lags))`` of left context then the window
            (from :meth:`LeftContext.extend`).
        history: ``[B, T]`` symbols of history before each position.
        mask: ``[B, T]`` real positions.
        lags: the lags δ (see module table).
        common: keep only positions where *every* lag has a target, so all lags are scored
            on the same positions.
    Returns:
        ``targets [B, T, K]`` long and ``valid [B, T, K]`` bool, K = ``len(lags)``.
    """
    b, t = history.shape
    c = ext.shape[1] - t
    if c < max(0, max(lags)):
        raise ValueError(f"left context of {c} symbols is shorter than the largest lag {max(lags)}")
    pos = torch.arange(t, device=ext.device)
    targets, valid = [], []
    for lag in lags:
        src = pos + c - lag  # index into ext
        ok = mask.clone()
        if lag > 0:
            ok &= history >= lag
        elif lag < 0:
            inside = src < c + t
            ok &= inside.expand(b, t)
            ok &= mask.gather(1, (src - c).clamp(max=t - 1).expand(b, t))
        targets.append(ext.gather(1, src.clamp(max=c + t - 1).expand(b, t)))
        valid.append(ok)
    targets_, valid_ = torch.stack(targets, -1), torch.stack(valid, -1)
    if common:
        valid_ = valid_ & valid_.all(-1, keepdim=True)
    return targets_, valid_


def bigram_labels(ext: Tensor, num_symbols: int) -> Tensor:
    """Labels of the bigrams ``x_{i-1} x_i`` of a sequence ``[B, N]``: ``[B, N - 1]`` ids ``x_{i-1}·V + x_i``."""
    return ext[:, :-1] * num_symbols + ext[:, 1:]


def label_prior(ids: Tensor, num_symbols: int, target: str) -> np.ndarray:
    """Frequencies of the probe's targets on a split's ids ``[N]`` (symbols or bigrams)."""
    ids = ids.long()
    labels = ids if target == "symbol" else ids[:-1] * num_symbols + ids[1:]
    n = num_symbols if target == "symbol" else num_symbols**2
    counts = torch.bincount(labels, minlength=n).double()
    return (counts / counts.sum()).numpy()


def target_labels(source: StateSource, target: str) -> list[str]:
    """The names of the probe's target labels: the symbols, or every bigram of them."""
    labels = source.vocab.labels
    return labels if target == "symbol" else [a + b for a in labels for b in labels]


def next_symbol_counts(sb: StateBatch) -> Tensor:
    """``[C·C]`` counts of (true next symbol, the model's argmax) over the real transitions of a
    batch whose source predicts (``sb.next_logits`` ``[B, T, C]``): the model's forward confusion."""
    if sb.next_logits is None:
        raise ValueError("next_symbol_counts needs a source that predicts (StateBatch.next_logits)")
    c = sb.next_logits.shape[-1]
    ok = sb.mask[:, 1:] & sb.mask[:, :-1]
    pred = sb.next_logits[:, :-1].argmax(-1)[ok]
    return torch.bincount(sb.symbols[:, 1:][ok] * c + pred, minlength=c * c).cpu()


def confusion_counts(pred: Tensor, y: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """``[K·C·C]`` counts of (lag, true label, predicted label) over the valid entries of
    ``pred, y, valid`` ``[N, K]`` (the signature's confusion matrices, flattened)."""
    lag = torch.arange(y.shape[1], device=y.device)
    c = num_classes
    return torch.bincount(((lag * c + y) * c + pred)[valid], minlength=y.shape[1] * c * c)
