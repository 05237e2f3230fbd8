"""A model's states over a text as an LSTMVis project folder (github.com/HendrikStrobelt/LSTMVis).

The source runs over the whole text as one stream, in order: windows of ``seq_len``
symbols with the recurrent state carried from one to the next, so every row is what one
long run gives. Windows are written as they come; only one is held at a time. The folder:

``states.hdf5``
    one float32 dataset ``[N, D]`` per exported state, its name with every
    non-alphanumeric character replaced by ``_`` (``layer1.c`` → ``layer1_c``).
``train.hdf5``
    ``words`` ``[N]`` int32: the symbol id at each time step; ``symbol_class`` ``[N]``
    int32: its class (:data:`SYMBOL_CLASSES`), an annotation track.
``train.dict``, ``symbol_class.dict``
    one ``token id`` line per id (LSTMVis splits lines on whitespace, so whitespace
    symbols are written as ``␣`` (space), ``↵`` (newline), ``⇥`` (tab) or ``<U+XXXX>``).
``lstm.yml``
    the LSTMVis config: ``files``, ``word_sequence``, ``states.types`` (an LSTM's
    ``layer{l}.c`` as type ``state``, its ``layer{l}.h`` as type ``output``, anything
    else as ``state``; the layer from the name, else the state's position) and ``meta``
    (``symbol_class`` as a discrete track labelled by its dict).

Row t of every dataset is time step t: the state after consuming symbol t
(:mod:`memsig.states`). The folder is written beside the target and renamed into place.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from torch import Tensor

from memsig.data.corpora import lines_of
from memsig.data.text import StreamBatches
from memsig.export.staging import staged
from memsig.states import StateSource
from memsig.vocab import Vocab

SYMBOL_CLASSES = ("letter", "digit", "space", "punctuation", "other")
WHITESPACE_TOKENS = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}
_LAYER_STATE = re.compile(r"layer(\d+)\.(\w+)$")


def encode_text(vocab: Vocab, text: str, separator: str = " ") -> Tensor:
    """``[N]`` ids of raw ``text``: each non-blank line normalised, lines joined by ``separator``
    (as :class:`~memsig.data.text.TextDataModule` joins segments)."""
    segments = [s for s in (vocab.normalize(line) for line in lines_of(text)) if s]
    if not segments:
        raise ValueError(
            f"the text has no symbols of the model's symbol set {vocab.alphabet!r} after normalisation "
            f"({len(text)} characters in); pass a text in the language the model was trained on"
        )
    return vocab.encode(separator.join(segments))


def dict_token(symbol: str) -> str:
    """``symbol`` as one whitespace-free, readable token of an LSTMVis ``.dict`` line."""
    if symbol in WHITESPACE_TOKENS:
        return WHITESPACE_TOKENS[symbol]
    return f"<U+{ord(symbol):04X}>" if symbol.isspace() or not symbol.isprintable() else symbol


def symbol_class(symbol: str, vocab: Vocab) -> int:
    """Index into :data:`SYMBOL_CLASSES` of one symbol (the vocab's digit symbol is a digit)."""
    if symbol.isalpha():
        return SYMBOL_CLASSES.index("letter")
    if symbol.isdigit() or symbol == vocab.digit_symbol:
        return SYMBOL_CLASSES.index("digit")
    if symbol.isspace():
        return SYMBOL_CLASSES.index("space")
    if unicodedata.category(symbol).startswith("P"):
        return SYMBOL_CLASSES.index("punctuation")
    return SYMBOL_CLASSES.index("other")


def dataset_name(state: str) -> str:
    """HDF5 dataset name of a state (``layer1.c`` → ``layer1_c``)."""
    return re.sub(r"\W", "_", state)


def state_type(state: str, position: int, names: Sequence[str]) -> dict[str, Any]:
    """The LSTMVis ``states.types`` entry of ``state`` (the ``position``-th of ``names``, 0-based)."""
    m = _LAYER_STATE.match(state)
    if m is None:
        return {"type": "state", "layer": position + 1, "path": dataset_name(state)}
    layer, kind = int(m.group(1)), m.group(2)
    is_output = kind == "h" and f"layer{layer}.c" in names
    return {"type": "output" if is_output else "state", "layer": layer, "path": dataset_name(state)}


def _write_dict(path: Path, tokens: Sequence[str]) -> None:
    """An LSTMVis ``.dict``: line i is ``tokens[i] i``."""
    path.write_text("".join(f"{tok} {i}\n" for i, tok in enumerate(tokens)), encoding="utf-8")


def write_lstmvis(
    source: StateSource,
    ids: Tensor,
    folder: str | Path,
    *,
    states: Sequence[str] | None = None,
    seq_len: int = 1024,
    extra: Mapping[str, Any] | None = None,
    name: str = "memsig",
    description: str = "",
    dtype: str = "float32",
    compression: str | None = None,
) -> Path:
    """Run ``source`` over ``ids`` as one stream and write the LSTMVis folder (module docstring).

    Args:
        source: the model; its ``states`` must carry state across windows (``batch["carry"]``).
        ids: ``[N]`` symbol ids of the text, in ``source.vocab`` (:func:`encode_text`, or a
            :class:`~memsig.data.text.TextDataModule`'s ``ids(split)``).
        folder: the project folder to create (replaced if it exists).
        states: state names to export (default: all of ``source.state_names``).
        seq_len: window length of the run (memory: one ``[1, seq_len, D]`` window per state).
        extra: entries added to every batch (e.g. ``lam`` ``[K]`` for the factorized LM).
        name, description: shown by LSTMVis.
        dtype: of the stored states: ``float32``, or ``float16`` for half the size (float16's
            rounding: a relative error of at most 2⁻¹¹).
        compression: ``gzip`` or ``lzf`` (HDF5 filters with byte shuffling, lossless, read by
            h5py without settings; states compress little, measured in docs/exports.md); None: none.
    Returns:
        the folder.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    if compression not in (None, "gzip", "lzf"):
        raise ValueError(f"compression must be gzip, lzf or None, got {compression!r}")
    names = list(source.state_names if states is None else states)
    unknown = [s for s in names if s not in source.state_names]
    if unknown:
        raise ValueError(f"states {unknown} are not states of the model; it has {source.state_names}")
    ids = ids.long()
    n = len(ids)
    if n == 0:
        raise ValueError("the text to export is empty; pass a text (or data split) with symbols in it")
    vocab = source.vocab
    classes = torch.tensor([symbol_class(c, vocab) for c in vocab.alphabet], dtype=torch.int32)
    # StreamBatches feeds every symbol but the last (it is only the last target); one copy
    # appended makes every symbol of the text an input (the targets are not used here).
    windows = StreamBatches(torch.cat([ids, ids[-1:]]), batch_size=1, seq_len=seq_len)
    types = [state_type(s, i, names) for i, s in enumerate(names)]
    with staged(folder, directory=True) as tmp:
        with h5py.File(tmp / "states.hdf5", "w") as f:

            def dataset(s: str) -> h5py.Dataset:  # compressed in chunks of whole rows, as LSTMVis reads them
                shape = (n, source.state_dims[s])
                filters = {"compression": compression, "shuffle": True, "chunks": (min(n, 256), shape[1])}
                return f.create_dataset(dataset_name(s), shape, dtype=dtype, **(filters if compression else {}))

            out = {s: dataset(s) for s in names}
            start = 0
            for i in range(len(windows)):
                sb = source.states({**windows[i], **(extra or {})})
                stop = start + sb.symbols.shape[1]
                for s in names:
                    out[s][start:stop] = sb.states[s][0].float().cpu().numpy()
                start = stop
        with h5py.File(tmp / "train.hdf5", "w") as f:
            f.create_dataset("words", data=ids.numpy().astype(np.int32))
            f.create_dataset("symbol_class", data=classes[ids].numpy())
        _write_dict(tmp / "train.dict", [dict_token(c) for c in vocab.alphabet])
        _write_dict(tmp / "symbol_class.dict", SYMBOL_CLASSES)
        config = {
            "name": name,
            "description": description or name,
            "files": {
                "states": "states.hdf5",
                "train": "train.hdf5",
                "words": "train.dict",
                "symbol_class_dict": "symbol_class.dict",
            },
            "word_sequence": {"file": "train", "path": "words", "dict_file": "words"},
            "states": {"file": "states", "types": types},
            "meta": {
                "symbol_class": {
                    "file": "train",
                    "path": "symbol_class",
                    "dict": "symbol_class_dict",
                    "vis": {"type": "discrete", "range": "dict"},
                }
            },
        }
        (tmp / "lstm.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return Path(folder)
