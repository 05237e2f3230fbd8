"""Lightning's overhead on CharLM training: the same model, data and steps, two loops.

Trains a 1-layer LSTM-320 (batch 64 x 128 characters of tiny-shakespeare) for the same
number of optimizer steps with ``lightning.Trainer`` and with a minimal plain-PyTorch
loop (same module, AdamW, gradient clipping, carried state), alternating the two in
rounds within one process, and prints characters/second of each and their ratio.

    python benchmarks/lightning_overhead.py [--steps 60] [--rounds 3] [--hidden 320]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch

from memsig.data import TextCorpus, TextDataModule
from memsig.models import CharLM
from memsig.resolvers import data_dir
from memsig.vocab import Vocab


class StepTimer(L.Callback):
    """Wall time from the first to the last training batch."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning_run(model: CharLM, dm: TextDataModule, steps: int, logged: bool) -> float:
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=logged and L.pytorch.loggers.CSVLogger("/tmp/memsig-bench"),
        enable_checkpointing=False,
        enable_progress_bar=logged,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    return timer.seconds


def plain_run(model: CharLM, dm: TextDataModule, steps: int) -> float:
    opt = model.configure_optimizers()["optimizer"]
    data = dm.dataset("train")
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        batch = data[i % len(data)]
        loss = model._token_losses(batch, "plain").mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    vocab = Vocab()
    dm = TextDataModule(
        TextCorpus(str(data_dir() / "shakespeare" / "tinyshakespeare.txt")),
        vocab,
        batch_size=args.batch,
        seq_len=args.seq_len,
    )
    dm.setup()

    def fresh() -> CharLM:
        torch.manual_seed(0)
        return CharLM(vocab, hidden_size=args.hidden, scheduler="none")

    chars = args.steps * args.batch * args.seq_len
    plain_run(fresh(), dm, 5)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {"plain": [], "lightning": [], "lightning+csv+bar": []}
    for r in range(args.rounds):
        times["plain"].append(plain_run(fresh(), dm, args.steps))
        times["lightning"].append(lightning_run(fresh(), dm, args.steps, logged=False))
        times["lightning+csv+bar"].append(lightning_run(fresh(), dm, args.steps, logged=True))
        print(f"round {r + 1}: " + ", ".join(f"{k} {chars / v[-1]:,.0f} chars/s" for k, v in times.items()), flush=True)
    plain = chars / statistics.median(times["plain"])
    print(
        f"\nLSTM-{args.hidden}, batch {args.batch}x{args.seq_len}, {args.steps} steps x {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads (median of rounds)"
    )
    print(f"{'loop':<20}{'chars/s':>12}{'vs plain':>10}")
    for name, ts in times.items():
        rate = chars / statistics.median(ts)
        print(f"{name:<20}{rate:>12,.0f}{rate / plain:>10.3f}")


if __name__ == "__main__":
    main()
