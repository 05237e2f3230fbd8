"""What the probe's position budget costs: signatures at several budgets, side by side.

The probe samples ``positions_per_batch`` positions of every training batch (the LM's
states are computed for all of them anyway). Fewer positions train the decoders on less
data per epoch and faster. This trains the same probe on the same checkpoint and data
for the same epochs at each budget and prints the marginal recall per lag, the wall
time, and each signature's distance (mean |Δ recall| per symbol) to the one trained on
every position.

    python benchmarks/probe_budget.py --ckpt <train run or .ckpt> [--budgets 256 1024 0] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import memsig
from memsig.analysis.distance import signature_distance
from memsig.data import TextCorpus, TextDataModule
from memsig.models import load_model
from memsig.resolvers import data_dir
from memsig.tasks.probe import resolve_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 1024, 0], help="0 = every position")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lags", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12])
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    model = load_model(resolve_checkpoint(args.ckpt))
    dm = TextDataModule(TextCorpus(str(data_dir() / "shakespeare" / "tinyshakespeare.txt")), model.vocab)
    sigs, seconds = {}, {}
    for budget in args.budgets:
        start = time.perf_counter()
        sigs[budget] = memsig.probe(
            model,
            dm,
            lags=args.lags,
            width=args.width,
            max_epochs=args.epochs,
            positions_per_batch=budget or None,
            controls=[],
            progress=False,
        )
        seconds[budget] = time.perf_counter() - start
    ref = sigs[min(args.budgets, key=lambda b: b or np.inf) if 0 not in args.budgets else 0]
    state = ref.real_states[0]
    print(f"\n{state}, width {args.width}, {args.epochs} epochs; marginal recall per lag")
    print("budget".rjust(8) + "".join(f"{lag:>7}" for lag in args.lags) + "   seconds  distance to ref")
    for budget, sig in sigs.items():
        acc = sig.accuracy[sig.index(state)]
        dist = signature_distance(sig, ref, state)
        print(f"{budget or 'all':>8}" + "".join(f"{a:7.3f}" for a in acc) + f"{seconds[budget]:10.1f}  {dist:.4f}")


if __name__ == "__main__":
    main()
