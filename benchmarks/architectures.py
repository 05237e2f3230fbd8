"""The architecture study's models side by side: what their every-step states cost, and how fast they train.

Each model of ``experiment=architecture_study`` is built as ``python train.py model=<name>`` builds
it (``conf/model/<name>.yaml``, fresh weights) and run on the same batch of tiny-shakespeare
(``--batch`` streams × ``--seq`` symbols):

(a) state extraction ÷ the model's own forward: ``states(batch)`` (every layer's states at every
    position, what the probe reads) against the forward a user of the model runs over the same
    batch (the Hugging Face module with its cache off; the char RNN's network), both without
    gradient. Goal: ≤ 2.
(b) training throughput relative to the LSTM: symbols per second of one optimizer step (forward,
    cross-entropy, backward, Adam), divided by the LSTM's.

Every timing is the median of ``--repeats`` runs after one warm-up; each model's measurements
alternate, so a change in the machine's load falls on both sides of a ratio.

    python benchmarks/architectures.py [--models lstm,mamba] [--batch 16] [--seq 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from memsig.data import TextCorpus
from memsig.models.hf import HFCausalLM
from memsig.models.lm_base import LMBase
from memsig.resolvers import PROJECT_ROOT, data_dir
from memsig.vocab import Vocab

MODELS = ["lstm", "gru", "mamba", "rwkv", "xlstm", "griffin", "transformer"]


def build(name: str, vocab: Vocab, seq: int) -> LMBase:
    """The model ``train.py model=<name> data.seq_len=<seq>`` trains, with fresh weights."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", f"data.seq_len={seq}"])
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model, vocab=vocab)


def own_forward(model: LMBase) -> Callable[[torch.Tensor], Any]:
    """The forward a user of the model runs: the Hugging Face module's, or the char RNN's network."""
    if isinstance(model, HFCausalLM):
        return lambda inputs: model.net.model(input_ids=inputs, use_cache=False).logits
    return lambda inputs: model.net(inputs)


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: LMBase, batch: dict[str, Any], repeats: int) -> tuple[float, float]:
    """(a) the time of ``states(batch)`` ÷ the model's own forward; (b) training symbols per second."""
    forward, inputs, targets = own_forward(model), batch["inputs"], batch["targets"]
    model.eval()
    with torch.no_grad():
        t_forward = median_time(lambda: forward(inputs), repeats)
        t_states = median_time(lambda: model.states(batch), repeats)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        logits, _ = model.next_logits(batch, None)
        opt.zero_grad()
        F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
        opt.step()

    return t_states / t_forward, inputs.numel() / median_time(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated conf/model names (lstm first)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    names = args.models.split(",")
    if names[0] != "lstm":
        ap.error("--models must start with lstm: (b) is relative to it")
    vocab = Vocab()
    text = " ".join(TextCorpus(str(data_dir() / "shakespeare" / "tinyshakespeare.txt")).load().train)
    ids = vocab.encode(vocab.normalize(text[: args.batch * (args.seq + 1) * 2]))
    window = ids[: args.batch * (args.seq + 1)].long().view(args.batch, args.seq + 1)
    b, t = args.batch, args.seq
    batch = {
        "inputs": window[:, :-1],
        "targets": window[:, 1:],
        "mask": torch.ones(b, t, dtype=torch.bool),
        "history": torch.arange(t).expand(b, t),
        "carry": False,
    }
    print(f"batch {b} x {t} symbols, medians of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'model':<12} {'params':>9} {'state floats':>13} {'(a) states/forward':>19} {'(b) train vs LSTM':>18}")
    lstm_rate = None
    for name in names:
        model = build(name, vocab, t)
        ratio, rate = measure(model, batch, args.repeats)
        lstm_rate = lstm_rate or rate
        params, floats = sum(p.numel() for p in model.parameters()), sum(model.state_dims.values())
        print(
            f"{name:<12} {params:>9,} {floats:>13,} {ratio:>19.2f} {rate / lstm_rate:>18.3f}"
            f"   ({rate:,.0f} symbols/s training)"
        )


if __name__ == "__main__":
    main()
