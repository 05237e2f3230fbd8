"""Batched state gradients against one position per autograd call, side by side.

Both compute the exact Jacobians ``∂c_t / ∂e_{t−δ}`` (δ = 0…Δ) of an LSTM-320's cell state
(1 layer, 64-dim embeddings, 31 symbols) at positions of a Shakespeare stream, each after the
same ``warmup`` symbols of context:

- forward: :func:`memsig.analysis.state_gradients.jacobians` in the CharLM's forward mode — E
  tangents per position through the cell equations, ``∂s_{p+δ}/∂e_p`` for every state at once
  (checked against autograd in tests/analysis/test_state_gradients.py);
- reverse: the same function in reverse mode — all positions in one batch and ``chunk`` state
  units per backward pass (rows replicated);
- per position: ``torch.autograd.functional.jacobian`` of one position's window at batch size
  1 (D backward passes per position, as the reference's original code did one step per run).

The per-position path is timed on ``--naive`` positions and scaled to the batch; the two
reverse results are checked equal to it on those positions. Prints the speed-ups (target >= 20x).

    python benchmarks/state_gradients_speed.py [--positions 64] [--naive 4] [--lags 20] [--chunk 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from memsig.analysis.state_gradients import jacobians, sample_positions
from memsig.data import TextCorpus
from memsig.models import CharLM
from memsig.resolvers import data_dir
from memsig.vocab import Vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=64)
    ap.add_argument("--naive", type=int, default=4, help="positions timed one per autograd call")
    ap.add_argument("--lags", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=320)
    args = ap.parse_args()
    vocab = Vocab()
    torch.manual_seed(0)
    lm = CharLM(vocab, num_layers=1, hidden_size=args.hidden, embedding_size=64).eval()
    text = " ".join(TextCorpus(str(data_dir() / "shakespeare" / "tinyshakespeare.txt")).load().test)
    ids = vocab.encode(vocab.normalize(text)).long()
    pos = sample_positions(len(ids), args.positions, args.lags, args.warmup, seed=0)
    name = "layer1.c"

    times, results = {}, {}
    for mode in ("forward", "reverse"):
        start = time.perf_counter()
        results[mode] = jacobians(lm, ids, pos, args.lags, args.warmup, [name], args.chunk, mode)[0][name]
        times[mode] = time.perf_counter() - start

    start = time.perf_counter()
    for n, t in enumerate(pos[: args.naive].tolist()):
        context = ids[None, t - args.lags - args.warmup : t - args.lags]
        window = ids[None, t - args.lags : t + 1]
        full = torch.autograd.functional.jacobian(
            lambda e, context=context: lm.embedded_states(e, context)[name][0, -1], lm.embed(window).detach()
        )  # [D, 1, Δ+1, E]
        torch.testing.assert_close(results["reverse"][n], full[:, 0].flip(1).transpose(0, 1), atol=1e-5, rtol=1e-4)
    t_naive = (time.perf_counter() - start) / args.naive * len(pos)

    print(
        f"Jacobians of {name} (D={args.hidden}, E=64) at {len(pos)} positions, lags 0..{args.lags}, "
        f"warm-up {args.warmup}, torch threads {torch.get_num_threads()}"
    )
    print(f"  forward mode (batched):         {times['forward']:8.2f} s")
    print(f"  reverse mode (batched, chunk {args.chunk}): {times['reverse']:8.2f} s")
    print(f"  one position per autograd call: {t_naive:8.2f} s  (measured on {args.naive}, scaled)")
    for mode, t in times.items():
        speedup = t_naive / t
        print(f"  speed-up {mode}: {speedup:.1f}x  (target >= 20x: {'PASS' if speedup >= 20 else 'FAIL'})")


if __name__ == "__main__":
    main()
