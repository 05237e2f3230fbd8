"""Compare signature files: side by side on one colour scale, difference maps, distances.

    python report.py run_a/signature.npz run_b/signature.npz [--names A B] [--state layer1.c] [--out DIR]

Writes into ``--out`` (default ``outputs/compare/<date_time>``): ``side_by_side``,
``marginal_recall`` and one ``difference_<first>_vs_<other>`` figure per other
signature (red = first remembers better), and ``distances.csv`` — every pair's
signature distance with its bootstrap interval (:mod:`memsig.analysis.distance`), the lags
it was measured on (those both signatures have) and the lags left out (printed as a note).
The distances are measured first: signatures that share no supported cell stop the
comparison before anything is written.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from memsig.analysis.distance import pairwise_distances, shared_lags
from memsig.data.io import atomic_write_bytes
from memsig.plots import difference_map, marginal_curves, save_figure, side_by_side
from memsig.probe.signature import Signature
from memsig.resolvers import PROJECT_ROOT


def compare(
    paths: list[Path],
    names: list[str] | None = None,
    state: str | None = None,
    out: Path | None = None,
    n_boot: int = 1000,
    formats: tuple[str, ...] = ("png", "svg"),
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Draw and measure the signatures in ``paths``; returns the pairwise distances.

    ValueError, before anything is written, where two signatures share no supported (lag, symbol) cell.
    """
    names = names or [p.parent.name if p.name == "signature.npz" else p.stem for p in paths]
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per signature; got {names}")
    sigs = {n: Signature.load(p) for n, p in zip(names, paths)}
    states = {n: state or s.real_states[0] for n, s in sigs.items()}
    distances = pairwise_distances(sigs, states, n=n_boot)
    out = out or PROJECT_ROOT / "outputs" / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S")
    save_figure(side_by_side(sigs, states), out / "side_by_side", formats)
    save_figure(marginal_curves(sigs, states=sorted(set(states.values()))), out / "marginal_recall", formats)
    first = names[0]
    for other in names[1:]:
        fig = difference_map(sigs[first], sigs[other], states[first], states[other], labels=(first, other))
        save_figure(fig, out / f"difference_{first}_vs_{other}", formats)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["a", "b", "distance", "low", "high", "lags", "lags_left_out"])
    print(f"signature distance (mean |Δ recall| over shared supported cells, 95% bootstrap) -> {out}")
    for (a, b), (d, lo, hi) in distances.items():
        used, left_out = shared_lags(sigs[a], sigs[b])
        writer.writerow(
            [a, b, f"{d:.5f}", f"{lo:.5f}", f"{hi:.5f}", " ".join(map(str, used)), " ".join(map(str, left_out))]
        )
        print(f"  {a} vs {b}: {d:.4f}  [{lo:.4f}, {hi:.4f}]")
        if left_out:
            print(f"    note: measured on the lags both have, {used}; lags {left_out} are in only one and left out")
    atomic_write_bytes(out / "distances.csv", buf.getvalue().encode())
    return distances
