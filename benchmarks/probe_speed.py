"""Speed and memory of the memory probe, measured side by side in one run (ratios, not absolute claims).

Model: CharLM 2-layer LSTM-320 (untrained: speed does not depend on the weights), tiny-shakespeare in
64 x 128 batches, lags 1..10, probed states layer1.c and layer2.c: 20 decoders (state, lag).

(a) multi-head vs naive probe training on the same S batches (``--steps``) and the same 1024 sampled
    positions per batch, hidden width W. Naive: 20 decoders ``Linear(D,W)-ReLU-Linear(W,C)``, each
    with its own Adam and its own loop over the S batches, re-reading the frozen states
    (``source.states(batch)``) every step. Multi-head: one loop, states once per batch, the lags of
    a state as one ``BatchedMLPHeads`` step (K=10). Naive loops cost the same per decoder, so only
    ``--naive-decoders`` of the 20 run and their time is scaled linearly to 20 (the output says so).
(b) achieved FLOP rate of one heads training step (forward, backward, Adam; K=10, D=320, C=31,
    N=4096 precomputed positions, no LM) as a fraction of ``torch.mm([N,D] @ [D,K*W])`` timed in
    alternation with it; FLOPs counted exactly (``train_flops_per_position * N``: forward, weight
    gradients, input gradients of all but the first layer); medians.
(c) peak RSS of ``memsig.probe`` (width 256, 200 steps, states cached on disk) on 100k and 400k
    training characters, each in a fresh subprocess (this script with ``--_memory-child``), read
    from ``ru_maxrss``.
The preview against the converged probe, and the converged probe against the old fixed-epoch
one: ``benchmarks/probe_convergence.py``.

    python benchmarks/probe_speed.py [--skip a,b,c] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import memsig
from memsig.data import TextCorpus, TextDataModule
from memsig.models import CharLM
from memsig.probe.heads import BatchedMLPHeads
from memsig.probe.targets import LeftContext, lag_targets
from memsig.resolvers import data_dir
from memsig.vocab import Vocab

LAGS = list(range(1, 11))
STATES = ["layer1.c", "layer2.c"]
D, C = 320, 31
Batch = tuple[dict[str, Any], Tensor, Tensor]  # LM batch, sampled flat positions [P], lag targets [P, K]
Row = tuple[str, str, str, bool]  # summary: what, measured, target, pass


def datamodule(vocab: Vocab, max_chars: int | None = None) -> TextDataModule:
    dm = TextDataModule(
        TextCorpus(str(data_dir() / "shakespeare" / "tinyshakespeare.txt")),
        vocab,
        batch_size=64,
        seq_len=128,
        max_chars=max_chars,
    )
    dm.setup()
    return dm


def lm(vocab: Vocab) -> CharLM:
    torch.manual_seed(0)
    return CharLM(vocab, num_layers=2, hidden_size=D, embedding_size=64).eval()


def update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def heads_loss(heads: BatchedMLPHeads, x: Tensor, y: Tensor) -> Tensor:
    """Sum over the K heads of each head's mean cross-entropy (all positions valid for every lag)."""
    logits = heads(x)  # [K, C, N]
    return F.cross_entropy(logits, y.T) * logits.shape[0]


def sampled_batches(dm: TextDataModule, steps: int, positions: int) -> list[Batch]:
    """The first ``steps`` train batches with ``positions`` sampled positions where every lag has a target."""
    data, ctx, gen = dm.dataset("train"), LeftContext(max(LAGS)), torch.Generator().manual_seed(0)
    out = []
    for i in range(steps):
        b = data[i]
        y, v = lag_targets(ctx.extend("train", b["inputs"], b["carry"]), b["history"], b["mask"], LAGS)
        ok = v.all(-1).flatten().nonzero().squeeze(1)
        idx = ok[torch.randperm(len(ok), generator=gen)[:positions]]
        out.append((b, idx, y.flatten(0, 1)[idx]))
    return out


def naive_seconds(model: CharLM, batches: list[Batch], width: int, decoders: list[tuple[str, int]]) -> float:
    """Each decoder (state, lag index): its own Adam and its own loop, re-reading the states."""
    start = time.perf_counter()
    for state, k in decoders:
        dec = nn.Sequential(nn.Linear(D, width), nn.ReLU(), nn.Linear(width, C))
        opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
        for b, idx, y in batches:
            x = model.states(b).states[state].flatten(0, 1)[idx]
            update(opt, F.cross_entropy(dec(x), y[:, k]))
    return time.perf_counter() - start


def multi_seconds(model: CharLM, batches: list[Batch], width: int) -> float:
    """One loop: states once per batch, one BatchedMLPHeads (K lags) per state, one Adam."""
    heads = {s: BatchedMLPHeads(len(LAGS), D, width, 1, C) for s in STATES}
    opt = torch.optim.Adam([p for h in heads.values() for p in h.parameters()], lr=1e-3, fused=True)  # as the probe
    start = time.perf_counter()
    for b, idx, y in batches:
        sb = model.states(b)
        update(opt, sum(heads_loss(h, sb.states[s].flatten(0, 1)[idx], y) for s, h in heads.items()))
    return time.perf_counter() - start


def bench_a(args: argparse.Namespace, vocab: Vocab) -> list[Row]:
    model, batches = lm(vocab), sampled_batches(datamodule(vocab), args.steps, 1024)
    every = [(s, k) for s in STATES for k in range(len(LAGS))]
    subset = [every[round(i * len(every) / args.naive_decoders)] for i in range(args.naive_decoders)]
    scale = len(every) / len(subset)
    multi_seconds(model, batches[:2], 64)  # warm-up (first LSTM calls, allocator)
    note = f"; naive measured on {len(subset)} of {len(every)} decoders, time scaled x{scale:g}" if scale != 1 else ""
    print(
        f"\n(a) probe training, S={args.steps} batches, 1024 positions/batch, {len(every)} decoders "
        f"({len(STATES)} states x {len(LAGS)} lags){note}"
    )
    print(f"{'width':>6}{'multi s':>10}{'naive s (measured)':>20}{'naive s (x20)':>15}{'speed-up':>10}")
    speedup = {}
    for w in (64, 256, 1024):
        multi, naive = multi_seconds(model, batches, w), naive_seconds(model, batches, w, subset)
        speedup[w] = naive * scale / multi
        print(f"{w:>6}{multi:>10.2f}{naive:>20.2f}{naive * scale:>15.2f}{speedup[w]:>9.1f}x", flush=True)
    return [("(a) multi-head speed-up, W=256", f"{speedup[256]:.1f}x", ">= 4x", speedup[256] >= 4)]


def bench_b(args: argparse.Namespace) -> list[Row]:
    n, k = 4096, len(LAGS)
    print(
        f"\n(b) heads training step vs torch.mm [N,D]@[D,K*W], N={n} K={k} D={D} C={C}, "
        f"median of {args.reps} alternating reps"
    )
    print(f"{'width':>6}{'heads GFLOP/s':>15}{'mm GFLOP/s':>12}{'fraction':>10}")
    fraction = {}
    for w in (64, 256, 1024):
        torch.manual_seed(0)
        heads = BatchedMLPHeads(k, D, w, 1, C)
        opt = torch.optim.Adam(heads.parameters(), lr=1e-3, fused=True)  # as MultiHeadProbe
        x, y, weight = torch.randn(n, D), torch.randint(0, C, (n, k)), torch.randn(D, k * w)
        t_step, t_mm = [], []
        for rep in range(3 + args.reps):  # 3 warm-up reps, then alternate timed step and matmul
            t0 = time.perf_counter()
            update(opt, heads_loss(heads, x, y))
            t1 = time.perf_counter()
            torch.mm(x, weight)
            if rep >= 3:
                t_step.append(t1 - t0)
                t_mm.append(time.perf_counter() - t1)
        heads_rate = heads.train_flops_per_position * n / statistics.median(t_step) / 1e9
        mm_rate = 2 * n * D * k * w / statistics.median(t_mm) / 1e9
        fraction[w] = heads_rate / mm_rate
        print(f"{w:>6}{heads_rate:>15.1f}{mm_rate:>12.1f}{fraction[w]:>10.2f}", flush=True)
    return [("(b) heads FLOP rate / matmul, W=256", f"{fraction[256]:.2f}", ">= 0.75", fraction[256] >= 0.75)]


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(chars: int) -> None:
    vocab = Vocab()
    model, dm = lm(vocab), datamodule(vocab, chars)
    before = peak_mib()
    memsig.probe(model, dm, lags=range(1, 11), width=256, max_steps=200, controls=[], progress=False)
    hwm = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    print(json.dumps({"chars": len(dm.ids("train")), "before": before, "peak": peak_mib(), "hwm": hwm / 1024}))


def bench_c() -> list[Row]:
    print("\n(c) peak RSS of memsig.probe (width 256, 200 steps, cached states), fresh subprocess each")
    print(f"{'train chars':>12}{'ru_maxrss before probe':>24}{'ru_maxrss at end':>18}{'VmHWM':>7}{'seconds':>9}  (MiB)")
    peaks = []
    for chars in (100_000, 400_000):
        # ru_maxrss survives exec: a child spawned from this process would report this process's peak if
        # larger. /bin/sh forks the child (it is not the last command), so the child's counter starts at 0.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, __file__, "--_memory-child", str(chars)]
        start = time.perf_counter()
        rec = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        peaks.append(rec["peak"])
        print(
            f"{rec['chars']:>12,}{rec['before']:>24.0f}{rec['peak']:>18.0f}{rec['hwm']:>7.0f}"
            f"{time.perf_counter() - start:>9.1f}",
            flush=True,
        )
    growth = peaks[1] / peaks[0] - 1
    print(f"growth of peak RSS from 1x to 4x the data: {growth:+.1%}")
    return [("(c) peak RSS growth, 4x data", f"{growth:+.1%}", "<= 10%", growth <= 0.10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip", default="", help="comma-separated measurements to skip: a,b,c")
    ap.add_argument("--steps", type=int, default=10, help="batches S of (a)")
    ap.add_argument("--naive-decoders", type=int, default=1, help="naive decoders run in (a), scaled to 20")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions of (b)")
    ap.add_argument("--_memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args._memory_child:
        memory_child(args._memory_child)
        return
    vocab, skip = Vocab(), set(args.skip.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    benches = {
        "a": lambda: bench_a(args, vocab),
        "b": lambda: bench_b(args),
        "c": bench_c,
    }
    rows = [row for key, bench in benches.items() if key not in skip for row in bench()]
    print(f"\n{'target':<40}{'measured':>10}{'target':>10}  result")
    for what, measured, target, ok in rows:
        print(f"{what:<40}{measured:>10}{target:>10}  {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
