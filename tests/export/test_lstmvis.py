"""The LSTMVis export: folder layout per LSTMVis' docs, ids, annotation track, states of one long run."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from memsig.export.lstmvis import SYMBOL_CLASSES, encode_text, state_type, write_lstmvis
from memsig.models.char_lm import CharLM
from memsig.models.delay_line import DelayLine
from memsig.models.hf import HFCausalLM
from memsig.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)
TEXT = (
    "First Citizen: Before we proceed any further, hear me speak!\n\nAll:  Speak, speak. 1609 pounds, isn't it?\n" * 12
)


def tiny_lm(cell: str = "lstm", layers: int = 2) -> CharLM:
    torch.manual_seed(0)
    return CharLM(Vocab(), cell=cell, num_layers=layers, hidden_size=12, embedding_size=8).eval()


def one_run(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """States of the whole text as one window from the zero state, ``[N, D]`` by name."""
    n = len(ids)
    batch = {
        "inputs": ids.long()[None],
        "mask": torch.ones(1, n, dtype=torch.bool),
        "history": torch.arange(n)[None],
        "carry": False,
    }
    return {k: v[0] for k, v in model.states(batch).states.items()}


def read_dict(path: Path) -> dict[int, str]:
    """As LSTMVis reads a .dict: ``token id`` per line, split on whitespace."""
    pairs = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert all(len(p) == 2 for p in pairs)
    return {int(i): tok for tok, i in pairs}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    model, vocab = tiny_lm(), Vocab()
    ids = encode_text(vocab, TEXT)
    folder = write_lstmvis(model, ids, tmp_path_factory.mktemp("vis") / "project", seq_len=37, name="t")
    return {
        "model": model,
        "ids": ids,
        "folder": folder,
        "config": yaml.safe_load((folder / "lstm.yml").read_text(encoding="utf-8")),
    }


def test_config_references_files_and_datasets_that_exist(export):
    folder, cfg = export["folder"], export["config"]
    files = cfg["files"]
    assert all((folder / name).is_file() for name in files.values())
    assert all(name.endswith((".h5", ".hdf5", ".dict", ".txt")) for name in files.values())  # LSTMVis' rule
    ws = cfg["word_sequence"]
    assert files[ws["dict_file"]].endswith(".dict")
    with h5py.File(folder / files[ws["file"]], "r") as f:
        assert ws["path"] in f
    assert cfg["states"]["types"] == [
        {"type": "state", "layer": 1, "path": "layer1_c"},
        {"type": "output", "layer": 1, "path": "layer1_h"},
        {"type": "state", "layer": 2, "path": "layer2_c"},
        {"type": "output", "layer": 2, "path": "layer2_h"},
    ]
    track = cfg["meta"]["symbol_class"]
    assert track["vis"] == {"type": "discrete", "range": "dict"} and files[track["dict"]].endswith(".dict")
    with h5py.File(folder / files[track["file"]], "r") as f:
        assert f[track["path"]].shape == (len(export["ids"]),)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["project"]  # no temporary left behind


def test_ids_decode_to_the_normalised_text(export):
    folder, ids = export["folder"], export["ids"]
    with h5py.File(folder / "train.hdf5", "r") as f:
        words = f["words"][:]
    assert words.dtype == np.int32 and len(words) == len(ids)
    expected = " ".join(Vocab().normalize(line) for line in TEXT.splitlines() if line.strip())
    assert Vocab().decode(words) == expected
    tokens = read_dict(folder / "train.dict")
    assert sorted(tokens) == list(range(len(Vocab()))) and tokens[0] == "\u2423"  # space, readable
    assert "".join(tokens[i] for i in words[:20]) == expected[:20].replace(" ", "\u2423")


def test_symbol_class_track(export):
    folder = export["folder"]
    classes = read_dict(folder / "symbol_class.dict")
    assert [classes[i] for i in range(len(classes))] == list(SYMBOL_CLASSES)
    with h5py.File(folder / "train.hdf5", "r") as f:
        track, words = f["symbol_class"][:], f["words"][:]
    alphabet = Vocab().alphabet
    for symbol, want in {"f": "letter", "#": "digit", " ": "space", ",": "punctuation", "'": "punctuation"}.items():
        at = words == alphabet.index(symbol)
        assert at.any() and (track[at] == SYMBOL_CLASSES.index(want)).all()


def test_a_hugging_face_lm_exports_the_states_of_one_long_run(tmp_path: Path):
    """Through the same interface: xLSTM's matrix memory carried from window to window."""
    torch.manual_seed(0)
    config = {"model_type": "xlstm", "hidden_size": 64, "qk_dim_factor": 1.0, "num_heads": 4, "num_hidden_layers": 1}
    model, ids = HFCausalLM(Vocab(), {**config, "autocast_kernel_dtype": "float32"}).eval(), encode_text(Vocab(), TEXT)
    folder = write_lstmvis(model, ids, tmp_path / "vis", states=["layer1.C"], seq_len=37)
    with h5py.File(folder / "states.hdf5", "r") as f:
        assert list(f) == ["layer1_C"] and f["layer1_C"].shape == (len(ids), model.state_dims["layer1.C"])
        np.testing.assert_allclose(f["layer1_C"][:], one_run(model, ids)["layer1.C"].numpy(), atol=1e-5, rtol=0)


def test_states_equal_one_long_run(export):
    folder, model, ids = export["folder"], export["model"], export["ids"]
    whole = one_run(model, ids)
    with h5py.File(folder / "states.hdf5", "r") as f:
        assert sorted(f) == ["layer1_c", "layer1_h", "layer2_c", "layer2_h"]
        for name, want in whole.items():
            got = f[name.replace(".", "_")]
            assert got.shape == (len(ids), 12) and got.dtype == np.float32
            np.testing.assert_allclose(got[:], want.numpy(), atol=1e-5, rtol=0)


def test_a_long_text_streams_and_a_folder_is_replaced(tmp_path: Path):
    model = tiny_lm(layers=1)
    ids = torch.randint(0, len(Vocab()), (100_000,), generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "vis"
    (folder / "stale").mkdir(parents=True)
    write_lstmvis(model, ids, folder, states=["layer1.h"], seq_len=4096)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vis"]
    assert "stale" not in {p.name for p in folder.iterdir()}
    with h5py.File(folder / "states.hdf5", "r") as f:
        assert list(f) == ["layer1_h"] and f["layer1_h"].shape == (100_000, 12)
        tail = f["layer1_h"][-50:]
    np.testing.assert_allclose(tail, one_run(model, ids)["layer1.h"][-50:].numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype, compression", [("float16", None), ("float32", "gzip"), ("float16", "lzf")])
def test_smaller_states_read_back_within_their_precision(export, tmp_path: Path, dtype: str, compression: str | None):
    model, ids = export["model"], export["ids"]
    ids = torch.cat([ids] * 20)  # long enough that the filters' chunks and headers do not dominate the size
    plain = write_lstmvis(model, ids, tmp_path / "plain", states=["layer1.c"], seq_len=37)
    small = write_lstmvis(
        model, ids, tmp_path / "small", states=["layer1.c"], seq_len=37, dtype=dtype, compression=compression
    )
    with h5py.File(plain / "states.hdf5", "r") as f, h5py.File(small / "states.hdf5", "r") as g:
        want, got = f["layer1_c"][:], g["layer1_c"]
        assert got.dtype == np.dtype(dtype) and got.compression == compression and got.shape == want.shape
        tol = 5e-4 * np.abs(want) + 1e-7 if dtype == "float16" else 0  # float16: 11 significant bits
        assert (np.abs(got[:].astype(np.float32) - want) <= tol).all()
    assert (small / "states.hdf5").stat().st_size < (plain / "states.hdf5").stat().st_size
    assert (small / "lstm.yml").read_text(encoding="utf-8") == (plain / "lstm.yml").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="compression must be gzip, lzf or None"):
        write_lstmvis(model, ids, tmp_path / "bad", compression="zip")


def test_any_state_source_and_state_types(tmp_path: Path):
    vocab = Vocab()
    assert state_type("layer2.h", 0, ["layer1.h", "layer2.h"]) == {"type": "state", "layer": 2, "path": "layer2_h"}
    assert state_type("delay", 1, ["x", "delay"]) == {"type": "state", "layer": 2, "path": "delay"}
    ids = encode_text(vocab, "abc abd abe")
    src = DelayLine(vocab, k=2)
    folder = write_lstmvis(src, ids, tmp_path / "vis", seq_len=4)
    with h5py.File(folder / "states.hdf5", "r") as f:
        delay = f["delay"][:]
    # slot j of the state at t is the one-hot of symbol t - j, across window borders too
    v = len(vocab)
    for t in range(2, len(ids)):
        assert [int(np.argmax(delay[t, j * v : (j + 1) * v])) for j in range(3)] == ids[[t, t - 1, t - 2]].tolist()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no symbols of the model's symbol set"):
        encode_text(Vocab(), "\n  \n\u00e6\u00f8\u00e5\n")
    with pytest.raises(ValueError, match="not states of the model"):
        write_lstmvis(tiny_lm(), encode_text(Vocab(), "abc"), Path("/nonexistent/vis"), states=["layer9.c"])
