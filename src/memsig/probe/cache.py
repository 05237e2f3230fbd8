"""States computed once: each split's probed states at its real positions, cached on disk.

Probing reads the frozen model's states many times (every training step, every dev check).
:func:`cached_split` runs the model over a split once, in order (so the source carries its
state exactly as in training), and writes, for every real position with at least one target:

- one float16 (or bfloat16, float32) array ``[N, D]`` per probed state (controls included:
  ``random:``/``shuffled:`` states come from :class:`~memsig.probe.controls.ControlledSource`,
  so both probes see the same controls);
- the targets of every lag ``[N, K]`` (int16, ``-1`` where a lag has none; see
  :mod:`memsig.probe.targets`);
- for symbol targets, the symbols at lags ``0 … max(lags) − 1`` ``[N, W]`` (int16, ``-1`` where
  there is none): the later symbols of every target, which the backward-context baseline reads
  (:mod:`memsig.probe.backward`);
- the block of each position ``[N]``: a stretch of ``block_len`` consecutive symbols of one
  stream (or segment), the unit the test bootstrap resamples;
- the model's own next-symbol confusion on the split (when the source predicts).

Files are appended batch by batch and read back memory-mapped, so memory does not grow with
the corpus. A cache folder is keyed by a fingerprint of the model's parameters, of the split's
batches and of the probe's states, lags, targets, control seed and dtype; it is written into a
temporary folder and renamed when complete (atomic), and reused by any later run with the same
key. A source that is not an ``nn.Module`` has no fingerprint: its cache lives in a temporary
folder for this run only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from memsig.probe.controls import ControlledSource, state_parts
from memsig.probe.targets import LeftContext, StreamBlocks, bigram_labels, lag_targets, next_symbol_counts
from memsig.states import StateSource

CACHE_VERSION = 2
DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class SplitStates:
    """One split's cached probe inputs (arrays memory-mapped; see module docstring).

    Attributes:
        states: probed state spec -> ``[N, D]`` array.
        targets: ``[N, K]`` int16 labels of each lag, ``-1`` where the lag has no target.
        later: ``[N, W]`` int16 symbols at lags ``0 … W − 1`` (``W = max(lags)``), ``-1`` where
            there is none; None for bigram targets or when no lag is positive.
        blocks: ``[N]`` int32 block id of each position (0 … ``num_blocks - 1``).
        num_blocks: number of blocks.
        forward: ``[C, C]`` the model's next-symbol confusion on the split, or None.
        folder: where the arrays live.
    """

    states: dict[str, np.ndarray]
    targets: np.ndarray
    later: np.ndarray | None
    blocks: np.ndarray
    num_blocks: int
    forward: np.ndarray | None
    folder: Path

    def __len__(self) -> int:
        return len(self.targets)

    def features(self, spec: str, idx: np.ndarray | slice) -> Tensor:
        """``[n, D]`` float32 states of ``spec`` at positions ``idx``."""
        return torch.from_numpy(np.ascontiguousarray(self.states[spec][idx], dtype=np.float32))

    def labels(self, idx: np.ndarray | slice) -> tuple[Tensor, Tensor]:
        """``targets [n, K]`` (long, 0 where invalid) and ``valid [n, K]`` bool at ``idx``."""
        y = torch.from_numpy(np.asarray(self.targets[idx], dtype=np.int64))
        return y.clamp(min=0), y >= 0

    @property
    def nbytes(self) -> int:
        extra = 0 if self.later is None else self.later.nbytes
        return sum(a.nbytes for a in self.states.values()) + self.targets.nbytes + self.blocks.nbytes + extra


def model_fingerprint(source: StateSource) -> str | None:
    """sha256 of a module's class and parameters and buffers (None for a non-module source)."""
    if not isinstance(source, nn.Module):
        return None
    h = hashlib.sha256(type(source).__qualname__.encode())
    for name, t in source.state_dict().items():
        if isinstance(t, Tensor):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _batch_fingerprint(h: Any, batch: dict[str, Any]) -> None:
    for key in sorted(batch):
        value = batch[key]
        h.update(key.encode())
        if isinstance(value, Tensor):
            h.update(str(tuple(value.shape)).encode())
            h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())


def source_device(source: StateSource) -> torch.device:
    """Where a module's parameters live (CPU for a source that is not an ``nn.Module``)."""
    if isinstance(source, nn.Module):
        return next(source.parameters(), torch.empty(0)).device
    return torch.device("cpu")


def cached_split(
    source: StateSource,
    datamodule: Any,
    split: str,
    specs: Sequence[str],
    lags: Sequence[int],
    target: str = "symbol",
    controls: Sequence[str] = (),
    seed: int = 0,
    dtype: str = "float16",
    root: str | Path | None = None,
    block_len: int = 256,
    progress: bool = False,
) -> SplitStates:
    """The cached probe inputs of ``split`` (built now unless a complete cache with the same key exists).

    Args:
        source: the frozen model.
        datamodule: gives ``dataset(split)``, the split's batches in order.
        specs: probed states (``a+b`` concatenates; ``random:``/``shuffled:`` for controls).
        lags, target: what each position's labels are (:mod:`memsig.probe.targets`).
        controls, seed: the controls' source (:class:`ControlledSource`, seeded).
        dtype: ``float16`` (default) or ``float32`` storage of the states.
        root: the cache root (None: a temporary folder, removed at exit).
        block_len: symbols of one stream per bootstrap block.
        progress: show a progress bar.
    """
    if dtype not in DTYPES:
        raise ValueError(f"probe.cache_dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    data = datamodule.dataset(split)
    model_key = model_fingerprint(source)
    h = hashlib.sha256()
    for i in range(len(data)):
        _batch_fingerprint(h, data[i])
    key_fields = {
        "version": CACHE_VERSION,
        "model": model_key,
        "data": h.hexdigest(),
        "split": split,
        "specs": list(specs),
        "lags": list(lags),
        "target": target,
        "controls": sorted(controls),
        "seed": seed if controls else None,
        "dtype": dtype,
        "block_len": block_len,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:24]
    if root is None or model_key is None:
        root = Path(tempfile.mkdtemp(prefix="memsig-states-"))
        _remove_at_exit(root)
    folder = Path(root) / f"{split}-{key}"
    if not (folder / "meta.json").is_file():
        write = partial(
            _write, source, data, key_fields, specs, lags, target, controls, seed, dtype, block_len, progress
        )
        _build(folder, write)
    return _open(folder)


def _remove_at_exit(folder: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def _build(folder: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` into a temporary folder beside ``folder``, then rename it there (atomic)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another run finished the same cache first: keep theirs
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(
    source: StateSource,
    data: Any,
    key_fields: dict[str, Any],
    specs: Sequence[str],
    lags: Sequence[int],
    target: str,
    controls: Sequence[str],
    seed: int,
    dtype: str,
    block_len: int,
    progress: bool,
    out: Path,
) -> None:
    """Run the model over ``data`` and write the cache files into ``out``."""
    store = DTYPES[dtype]
    probed = ControlledSource(source, controls, seed) if controls else source
    if isinstance(source, nn.Module):
        source.eval()
    c = len(source.vocab)
    context = LeftContext(max(0, max(lags)) + (1 if target == "bigram" else 0))
    device = source_device(source)
    files = {s: open(out / f"state{i}.bin", "wb") for i, s in enumerate(specs)}  # noqa: SIM115 (closed below)
    targets_file, blocks_file = open(out / "targets.bin", "wb"), open(out / "blocks.bin", "wb")  # noqa: SIM115
    later_lags = list(range(max(lags))) if target == "symbol" else []
    later_file = open(out / "later.bin", "wb")  # noqa: SIM115 (closed below)
    dims: dict[str, int] = {}
    forward = torch.zeros(c * c, dtype=torch.long)
    blocks_of, n = StreamBlocks(block_len), 0
    steps = range(len(data))
    if progress:
        from rich.progress import track

        steps = track(steps, description=f"states ({key_fields['split']})", transient=True)
    try:
        with torch.no_grad():
            for i in steps:
                batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in data[i].items()}
                sb = probed.states(batch)
                carry = bool(batch["carry"])
                ext = context.extend("split", sb.symbols, carry)
                history, mask = sb.history, sb.mask
                if target == "bigram":
                    ext, history, mask = bigram_labels(ext, c), history - 1, mask & (history >= 1)
                labels, valid = lag_targets(ext, history, mask, list(lags))
                idx = valid.any(-1).flatten().cpu().nonzero().squeeze(1)
                blocks_file.write(np.asarray(blocks_of(sb.history.cpu(), carry, idx), dtype=np.int32).tobytes())
                y = torch.where(valid, labels, -1).flatten(0, 1).cpu()[idx]
                targets_file.write(y.to(torch.int16).numpy().tobytes())
                if later_lags:
                    symbols, known = lag_targets(ext, history, mask, later_lags)
                    later = torch.where(known, symbols, -1).flatten(0, 1).cpu()[idx]
                    later_file.write(later.to(torch.int16).numpy().tobytes())
                for s in specs:
                    x = torch.cat([sb.states[p] for p in state_parts(s)], -1)
                    x = x.flatten(0, 1).cpu()[idx]
                    dims[s] = x.shape[1]
                    files[s].write(x.numpy().astype(store).tobytes())
                if sb.next_logits is not None:
                    forward += next_symbol_counts(sb)
                n += len(idx)
    finally:
        for f in (*files.values(), targets_file, blocks_file, later_file):
            f.close()
    if n == 0:
        raise ValueError(
            f"the {key_fields['split']} split has no position with a target at lags {list(lags)}: "
            "use more text or smaller lags"
        )
    meta = {
        **key_fields,
        "positions": n,
        "lags_count": len(lags),
        "later_count": len(later_lags),
        "dims": dims,
        "files": {s: f"state{i}.bin" for i, s in enumerate(specs)},
        "num_blocks": blocks_of.num_blocks,
        "forward": forward.tolist() if forward.sum() else None,
        "num_symbols": c,
    }
    (out / "meta.json").write_text(json.dumps(meta))


def _open(folder: Path) -> SplitStates:
    meta = json.loads((folder / "meta.json").read_text())
    n, k, store = meta["positions"], meta["lags_count"], DTYPES[meta["dtype"]]
    states = {
        s: np.memmap(folder / name, dtype=store, mode="r", shape=(n, meta["dims"][s]))
        for s, name in meta["files"].items()
    }
    c, w = meta["num_symbols"], meta["later_count"]
    later = np.memmap(folder / "later.bin", dtype=np.int16, mode="r", shape=(n, w)) if w else None
    forward = None if meta["forward"] is None else np.asarray(meta["forward"], dtype=np.int64).reshape(c, c)
    return SplitStates(
        states,
        np.memmap(folder / "targets.bin", dtype=np.int16, mode="r", shape=(n, k)),
        later,
        np.memmap(folder / "blocks.bin", dtype=np.int32, mode="r", shape=(n,)),
        meta["num_blocks"],
        forward,
        folder,
    )
