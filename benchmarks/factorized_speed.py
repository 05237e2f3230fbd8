"""Cost of the factorized-kernel LM's two paths against the plain LSTM LM, side by side.

One training step (forward + backward of the next-symbol loss) at the issue's calibration
shape: batch 64 x 128 symbols, 1 layer of 320 units, 31 symbols (K = 961 bigram bases).
The three models are timed in alternating rounds in one process; the median of each is
reported with the ratios to the plain LSTM:

- plain:   ``CharLM`` (fused ``nn.LSTM``);
- cluster: ``FactorizedCharLM`` with one λ for the batch (scopes ``cluster``/``domain``):
           the kernel is folded and the fused ``nn.LSTM`` runs with it (target <= 1.2x);
- segment: ``FactorizedCharLM`` with a λ per row (scope ``segment``): the time loop with the
           input products hoisted out of it (target <= 15x).

    python benchmarks/factorized_speed.py [--rounds 5] [--hidden 320] [--batch 64] [--seq 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from memsig.models import CharLM
from memsig.models.factorized import FactorizedCharLM
from memsig.vocab import Vocab


def step_seconds(model: CharLM, inputs: torch.Tensor, lam: torch.Tensor | None) -> float:
    """Wall time of one forward + backward pass of the mean next-symbol loss."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    cond = {} if lam is None else {"lam": lam}
    logits = model(inputs[:, :-1], **cond)[0]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), inputs[:, 1:].flatten())
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    vocab = Vocab()
    torch.manual_seed(0)
    shape = dict(num_layers=1, hidden_size=args.hidden, embedding_size=64)
    plain, factorized = CharLM(vocab, **shape), FactorizedCharLM(vocab, **shape)
    k = factorized.num_bases
    inputs = torch.randint(0, len(vocab), (args.batch, args.seq + 1))
    runs = {
        "plain": (plain, None),
        "cluster": (factorized, torch.randn(k)),
        "segment": (factorized, torch.randn(args.batch, k)),
    }
    for model, lam in runs.values():  # warm-up
        step_seconds(model, inputs, lam)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, lam) in runs.items():
            times[name].append(step_seconds(model, inputs, lam))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x {args.seq}, "
        f"hidden {args.hidden}, K = {k} bases; forward + backward, median of {args.rounds} alternating rounds"
    )
    targets = {"plain": None, "cluster": 1.2, "segment": 15.0}
    for name, seconds in med.items():
        ratio = seconds / med["plain"]
        verdict = (
            ""
            if targets[name] is None
            else f"  target <= {targets[name]}x: {'PASS' if ratio <= targets[name] else 'FAIL'}"
        )
        print(f"{name:<8} {seconds:7.3f} s  {ratio:6.2f}x plain{verdict}")


if __name__ == "__main__":
    main()
