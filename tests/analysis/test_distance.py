"""Signature distance: definition on toy cases, NaN handling, bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from memsig.analysis import bootstrap_distance, pairwise_distances, signature_distance
from memsig.probe.signature import Signature


def toy(
    recall: list[list[float]],
    support: list[list[int]],
    symbols: tuple[str, ...] = ("x", "y"),
    lags: tuple[int, ...] = (1, 2),
) -> Signature:
    """One state ``s``; row ``(lag, t)`` has ``support`` positions, ``recall`` of them right, the rest on t+1."""
    c = len(symbols)
    conf = np.zeros((1, len(lags), c, c), dtype=np.int64)
    for k in range(len(lags)):
        for t in range(c):
            hits = round(recall[k][t] * support[k][t])
            conf[0, k, t, t] = hits
            conf[0, k, t, (t + 1) % c] = support[k][t] - hits
    return Signature(["s"], list(lags), list(symbols), conf, np.zeros((1, len(lags))), np.full(c, 1 / c))


A = toy([[0.8, 0.6], [0.5, 0.0]], [[100, 100], [100, 10]])  # (lag 2, y) has support 10 < 20: NaN
B = toy([[0.7, 0.9], [0.2, 0.4]], [[100, 100], [100, 100]])


def test_toy_recall_is_as_built() -> None:
    np.testing.assert_allclose(A.recall[0], [[0.8, 0.6], [0.5, np.nan]])


def test_hand_computed_value_skips_nan_cells() -> None:
    assert signature_distance(A, B, "s") == pytest.approx((0.1 + 0.3 + 0.3) / 3)
    assert signature_distance(A, B, "s", lags=[2]) == pytest.approx(0.3)


def test_zero_to_itself_and_symmetric() -> None:
    assert signature_distance(A, A, "s") == 0
    assert signature_distance(A, B, "s") == signature_distance(B, A, "s")


def test_symbols_matched_by_label_and_lags_shared() -> None:
    swapped = toy([[0.6, 0.8]], [[100, 100]], symbols=("y", "x"), lags=(1,))
    assert signature_distance(A, swapped, "s") == 0  # only lag 1 is shared, same recall per label


def test_errors() -> None:
    other = toy([[0.8, 0.6], [0.5, 0.5]], [[100, 100], [100, 100]], symbols=("x", "z"))
    with pytest.raises(ValueError, match=r"different symbol sets.*\['y'\].*\['z'\]"):
        signature_distance(A, other, "s")
    with pytest.raises(ValueError, match=r"share no \(lag, symbol\) cell.*lags \[1, 2\].*\[7\].*probe.lags"):
        signature_distance(A, toy([[0.5, 0.5]], [[100, 100]], lags=(7,)), "s")
    with pytest.raises(ValueError, match="enough support"):
        signature_distance(A, toy([[0.5, 0.5]], [[5, 5]], lags=(1,)), "s")
    with pytest.raises(KeyError):
        signature_distance(A, B, "s", "missing")


def test_bootstrap_contains_estimate_and_shrinks_with_support() -> None:
    d, low, high = bootstrap_distance(A, B, "s", n=2000, seed=1)
    assert d == signature_distance(A, B, "s") and low < d < high
    big_a = toy([[0.8, 0.6], [0.5, 0.0]], [[10000, 10000], [10000, 10]])
    big_b = toy([[0.7, 0.9], [0.2, 0.4]], [[10000, 10000], [10000, 10000]])
    d_big, low_big, high_big = bootstrap_distance(big_a, big_b, "s", n=2000, seed=1)
    assert d_big == pytest.approx(d) and low_big < d_big < high_big
    assert (high_big - low_big) < (high - low) / 5  # ~10x narrower with 100x the positions
    assert bootstrap_distance(A, B, "s", n=200, seed=3) == bootstrap_distance(A, B, "s", n=200, seed=3)


def test_pairwise_distances() -> None:
    c = toy([[0.8, 0.6], [0.5, 0.5]], [[100, 100], [100, 100]])
    out = pairwise_distances({"a": A, "b": B, "c": c}, "s", n=100)
    assert list(out) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert out[("a", "b")] == bootstrap_distance(A, B, "s", n=100)
    assert out[("a", "c")][0] == 0
    renamed = Signature(["t"], B.lags, B.symbols, B.confusion, B.ce_bits, B.prior)
    by_state = pairwise_distances({"a": A, "b": renamed}, {"a": "s", "b": "t"}, n=100)
    assert by_state[("a", "b")][0] == pytest.approx(0.7 / 3)


def blocked(x_hits: np.ndarray, per_block: int = 20) -> Signature:
    """One state and lag, symbols x and y; ``x_hits`` ``[R, B]``: x recalled by seed r in block b
    (of ``per_block`` x positions each); y always recalled."""
    r, b = x_hits.shape
    block_correct = np.zeros((r, b, 1, 1, 2), dtype=np.int64)
    block_correct[..., 0, 0, 0], block_correct[..., 0, 0, 1] = x_hits, per_block
    block_support = np.full((b, 1, 1, 2), per_block, dtype=np.int64)
    conf = np.zeros((1, 1, 2, 2), dtype=np.int64)
    hits = block_correct.sum((0, 1))[0, 0]  # [2], pooled over seeds
    conf[0, 0] = [[hits[0], r * b * per_block - hits[0]], [0, hits[1]]]
    return Signature(
        ["s"],
        [1],
        ["x", "y"],
        conf,
        np.zeros((1, 1)),
        np.full(2, 0.5),
        seeds=r,
        block_correct=block_correct,
        block_support=block_support,
    )


def test_distance_interval_carries_block_dependence_and_seed_spread() -> None:
    """Three signatures with the same recall (x 0.5, y 1) against a near-exact reference: blocks
    alike and seeds alike leave no uncertainty; all-or-nothing blocks (a dependent stream) and
    seeds that disagree each widen the interval."""
    reference = toy([[0.8, 1.0]], [[10**6, 10**6]], lags=(1,))
    smooth = blocked(np.full((2, 50), 10))
    blocky = blocked(np.tile(np.repeat([[0, 20]], 25, 0).ravel(), (2, 1)))  # blocks all wrong or all right
    split = blocked(np.stack([np.full(50, 6), np.full(50, 14)]))  # seed 0 recalls 0.3, seed 1 0.7
    widths = {}
    for name, sig in (("smooth", smooth), ("blocky", blocky), ("split", split)):
        d, low, high = bootstrap_distance(sig, reference, "s", n=2000, seed=0)
        assert d == pytest.approx(0.15) and low <= d <= high, name
        widths[name] = high - low
    assert widths["smooth"] < 0.002
    assert widths["blocky"] > 0.05 and widths["split"] > 0.05
