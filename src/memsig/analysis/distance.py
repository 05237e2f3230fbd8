"""Distance between two memory signatures, with a bootstrap interval.

Definition: for one state of each signature, on the lags both share (:func:`shared_lags`; a
caller names the ones left out) and on the same symbol set (matched by label), the distance
is the mean absolute difference of the per-symbol recall (fractions in [0, 1]) over the
(lag, symbol) cells supported in both, i.e. non-NaN in both (support >= each signature's
``min_support``). 0 = identical recall, 1 = one recalls every cell perfectly where the
other recalls nothing.

The interval carries both sources of a signature's uncertainty (``Signature.recall_ci``). Where a
signature has block counts (the MLP probe), each resample redraws its test blocks with
replacement (positions of one stream are dependent, so blocks, not positions, are the unit) and
its probe seeds with replacement (the spread over probe training). Otherwise (older files, the
ridge preview) its test positions are resampled stratified by true symbol: each (lag, symbol)
confusion row's diagonal redrawn as Binomial(row total, row recall). Note that a mean of
absolute differences is biased upwards under noise: for nearly identical signatures the
interval lies above the point estimate (it is the noise floor).
"""

from __future__ import annotations

import warnings

import numpy as np

from memsig.probe.signature import Signature


def _cells(sig: Signature, state: str, lags: list[int], symbols: list[str]) -> tuple[np.ndarray, ...]:
    """``(correct, support, supported)``, each ``[K, C]``, of ``state`` on ``lags`` × ``symbols``."""
    k = [sig.lags.index(lag) for lag in lags]
    c = [sig.symbols.index(s) for s in symbols]
    correct, support = (x[sig.index(state)][np.ix_(k, c)] for x in (sig.correct, sig.support))
    return correct, support, support >= sig.min_support


def shared_lags(a: Signature, b: Signature) -> tuple[list[int], list[int]]:
    """The lags a distance between ``a`` and ``b`` uses (``a``'s that ``b`` has too, in ``a``'s
    order) and those it leaves out (in only one of them, ``a``'s first)."""
    used = [lag for lag in a.lags if lag in b.lags]
    return used, [lag for lag in (*a.lags, *b.lags) if lag not in used]


def _shared(a: Signature, b: Signature, lags: list[int] | None, same_symbols: bool) -> tuple[list[int], list[str]]:
    if same_symbols and set(a.symbols) != set(b.symbols):
        only_a, only_b = sorted(set(a.symbols) - set(b.symbols)), sorted(set(b.symbols) - set(a.symbols))
        raise ValueError(f"signatures have different symbol sets: only in first {only_a}, only in second {only_b}")
    used = [lag for lag in shared_lags(a, b)[0] if lags is None or lag in lags]
    symbols = [s for s in a.symbols if s in b.symbols]
    if not used or not symbols:
        asked = "" if lags is None else f" (asked for lags {list(lags)})"
        raise ValueError(
            f"signatures share no (lag, symbol) cell: the first has lags {a.lags}, the second {b.lags}{asked}, "
            f"{len(symbols)} shared symbols; probe both at common lags (probe.lags) to compare them"
        )
    return used, symbols


def aligned_recall(
    a: Signature,
    b: Signature,
    state_a: str,
    state_b: str | None = None,
    lags: list[int] | None = None,
    same_symbols: bool = True,
) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    """Shared lags, symbols (in ``a``'s order) and the recall ``[K, C]`` of each (NaN on low support).

    With ``same_symbols`` the symbol sets must be equal (ValueError otherwise); else their intersection is used.
    """
    lags_, symbols = _shared(a, b, lags, same_symbols)
    out = []
    for sig, state in ((a, state_a), (b, state_b or state_a)):
        correct, support, ok = _cells(sig, state, lags_, symbols)
        out.append(np.where(ok, correct / np.maximum(support, 1), np.nan))
    return lags_, symbols, out[0], out[1]


def signature_distance(
    a: Signature, b: Signature, state_a: str, state_b: str | None = None, lags: list[int] | None = None
) -> float:
    """Mean |recall_a − recall_b| over the cells supported in both (see module docstring)."""
    used, _, ra, rb = aligned_recall(a, b, state_a, state_b, lags)
    both = ~np.isnan(ra) & ~np.isnan(rb)
    if not both.any():
        raise ValueError(
            f"no (lag, symbol) cell has enough support in both signatures ({state_a!r}, {state_b or state_a!r}) "
            f"at their shared lags {used}: a cell needs min_support ({a.min_support}, {b.min_support}) test "
            "positions in each; probe on more test text, or at lags both cover"
        )
    return float(np.abs(ra - rb)[both].mean())


def bootstrap_distance(
    a: Signature,
    b: Signature,
    state_a: str,
    state_b: str | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """``(distance, low, high)``: the distance and its percentile interval over ``n`` stratified resamples."""
    distance = signature_distance(a, b, state_a, state_b)
    lags, symbols = _shared(a, b, None, True)
    rng = np.random.default_rng(seed)
    resampled, mask = [], True
    for sig, state in ((a, state_a), (b, state_b or state_a)):
        resampled.append(resampled_recall(sig, state, lags, symbols, n, rng))
        mask = mask & _cells(sig, state, lags, symbols)[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell a resample left without positions
        boot = np.nanmean(np.abs(resampled[0] - resampled[1])[:, mask], -1)
    low, high = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return distance, float(low), float(high)


def resampled_recall(
    sig: Signature, state: str, lags: list[int], symbols: list[str], n: int, rng: np.random.Generator
) -> np.ndarray:
    """``[n, K, C]`` recall of ``state`` on ``lags`` × ``symbols`` in ``n`` bootstrap resamples:
    blocks and seeds where ``sig`` has block counts, else positions per symbol (module docstring).
    NaN where a resample holds no position of a cell."""
    correct, support, _ = _cells(sig, state, lags, symbols)
    if sig.block_correct is None:
        hits = rng.binomial(support, correct / np.maximum(support, 1), size=(n, *support.shape))
        return hits / np.maximum(support, 1)
    k = [sig.lags.index(lag) for lag in lags]
    c = [sig.symbols.index(s) for s in symbols]
    i = sig.index(state)
    bc = sig.block_correct[:, :, i][:, :, k][..., c].astype(np.float64)  # [R, B, K, C]
    bs = sig.block_support[:, i][:, k][..., c].astype(np.float64)  # [B, K, C]
    r, b = bc.shape[:2]
    blocks = rng.multinomial(b, np.full(b, 1 / b), size=n).astype(np.float64)  # [n, B]
    seeds = rng.multinomial(r, np.full(r, 1 / r), size=n) / r  # [n, R]
    hits = np.einsum("nr,nrx->nx", seeds, np.einsum("nb,rbx->nrx", blocks, bc.reshape(r, b, -1)))
    total = blocks @ bs.reshape(b, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / total, np.nan).reshape(n, len(k), len(c))


def pairwise_distances(
    sigs: dict[str, Signature], state: str | dict[str, str], n: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """:func:`bootstrap_distance` for every pair ``(first, second)`` of ``sigs`` in dict order (first before second).

    ``state`` is one state name for all signatures or one per signature name. Each pair is measured
    on the lags both have (:func:`shared_lags`); ValueError naming the pair where they share no
    supported cell.
    """
    states = state if isinstance(state, dict) else {name: state for name in sigs}
    names = list(sigs)
    out = {}
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            try:
                out[x, y] = bootstrap_distance(sigs[x], sigs[y], states[x], states[y], n, seed, level)
            except ValueError as err:
                raise ValueError(f"{x} vs {y}: {err}") from None
    return out
