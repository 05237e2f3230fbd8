"""Text corpora larger than memory: encoding once, the first training step, and peak RSS at two sizes.

Writes a corpus of ``--size`` characters into a temporary folder (tiny-shakespeare and the PTB
text, raw, repeated) and a tenth of it, then runs each step in a fresh subprocess (this script
with ``--_child``), so that its peak RSS (``VmHWM`` of ``/proc/self/status``) is its own:

(a) the first build: ``TextDataModule.setup()`` on an empty cache, i.e. streaming, normalising and
    encoding the corpus into the memory-mapped symbol cache (:mod:`memsig.data.symbols`);
(b) the time to the first training step with the cache built: from the subprocess's start
    (imports included) through ``setup()`` to the end of the first optimizer step of a
    ``lightning.Trainer`` fitting ``CharLM`` (1-layer LSTM-320, batches of 64 x 128, the defaults);
(c) peak RSS of (a) and (b), and its ratio between the full corpus and its tenth: memory that
    stays flat as the corpus grows gives a ratio near 1.

    python benchmarks/data_scale.py [--size 100000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memsig.resolvers import data_dir

SOURCES = ("shakespeare/tinyshakespeare.txt", "ptb/ptb.train.txt", "ptb/ptb.valid.txt", "ptb/ptb.test.txt")
GOALS = {"first step (s)": 60.0, "peak RSS (MB)": 2000.0}


def write_corpus(path: Path, size: int) -> int:
    """Write at least ``size`` characters of the shared corpora, repeated, to ``path``; the characters written."""
    text = "".join((data_dir() / s).read_text(encoding="utf-8") for s in SOURCES)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            part = text[: size - written] if size - written < len(text) else text
            f.write(part if part.endswith("\n") else part + "\n")
            written += len(part)
    return written


def hwm_mb() -> float:
    """This process's peak resident set size in MB (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


def child(mode: str, corpus: str, cache: str, started: float) -> None:
    """One measurement (see module docstring), printed as a JSON line."""
    import lightning as L

    from memsig.data import TextCorpus, TextDataModule
    from memsig.models import CharLM
    from memsig.vocab import Vocab

    t0 = time.perf_counter()
    dm = TextDataModule(TextCorpus(corpus), Vocab(), batch_size=64, seq_len=128, cache_dir=cache)
    dm.setup()
    out = {"setup_s": time.perf_counter() - t0, "symbols": len(dm.ids("train"))}
    if mode == "step":

        class FirstStep(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                out["first_step_s"] = time.time() - started

        trainer = L.Trainer(
            max_steps=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[FirstStep()],
            accelerator="cpu",
        )
        trainer.fit(CharLM(Vocab()), datamodule=dm)
    out["hwm_mb"] = hwm_mb()
    print(json.dumps(out), flush=True)


def measure(mode: str, corpus: Path, cache: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--_child", mode, str(corpus), str(cache), repr(time.time())]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} on {corpus} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", type=int, default=100_000_000, help="characters of the large corpus (its tenth is the small one)"
    )
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        mode, corpus, cache, started = args._child
        child(mode, corpus, cache, float(started))
        return
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in (("1x", args.size // 10), ("10x", args.size)):
            corpus = Path(tmp) / f"corpus_{label}.txt"
            chars = write_corpus(corpus, size)
            print(f"{label}: {chars:,} characters ({corpus.stat().st_size / 1e6:.1f} MB)", flush=True)
            build = measure("build", corpus, Path(tmp) / "cache")
            step = measure("step", corpus, Path(tmp) / "cache")
            cache_mb = sum(f.stat().st_size for f in (Path(tmp) / "cache").rglob("*") if f.is_file()) / 1e6
            results[label] = {"build": build, "step": step}
            print(
                f"  (a) first build {build['setup_s']:.1f} s, peak RSS {build['hwm_mb']:.0f} MB; "
                f"(b) first step {step['first_step_s']:.1f} s (setup {step['setup_s']:.2f} s), "
                f"peak RSS {step['hwm_mb']:.0f} MB; caches so far {cache_mb:.0f} MB",
                flush=True,
            )
            corpus.unlink()
    big, small = results["10x"], results["1x"]
    peak = max(big["build"]["hwm_mb"], big["step"]["hwm_mb"])
    rows = [
        ("(a) first build, encoding (s)", f"{big['build']['setup_s']:.1f}", "", ""),
        (
            "(b) first training step, cache built (s)",
            f"{big['step']['first_step_s']:.1f}",
            "≤ 60",
            big["step"]["first_step_s"] <= 60,
        ),
        ("(c) peak RSS, build and step (MB)", f"{peak:.0f}", "≤ 2000", peak <= 2000),
        (
            "(c) peak RSS 10x / 1x, build",
            f"{big['build']['hwm_mb']:.0f} / {small['build']['hwm_mb']:.0f} = {big['build']['hwm_mb'] / small['build']['hwm_mb']:.2f}",
            "",
            "",
        ),
        (
            "(c) peak RSS 10x / 1x, first step",
            f"{big['step']['hwm_mb']:.0f} / {small['step']['hwm_mb']:.0f} = {big['step']['hwm_mb'] / small['step']['hwm_mb']:.2f}",
            "",
            "",
        ),
    ]
    print(f"\n{args.size:,} characters (10x) vs {args.size // 10:,} (1x)")
    for what, measured, goal, ok in rows:
        verdict = "" if ok == "" else ("met" if ok else "NOT MET")
        print(f"{what:<44}{measured:>24}  {goal:<8}{verdict}")


if __name__ == "__main__":
    main()
