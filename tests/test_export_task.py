"""export.py end to end on a small checkpoint: LSTMVis from a text file and a data split, signature tables,
and the errors that name bad input."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from test_signature_table import make_signature

from memsig.data.corpora import TextCorpus
from memsig.data.text import TextDataModule
from memsig.export.signature_table import load_signature_nc
from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import CheckpointError
from memsig.probe.signature import Signature
from memsig.resolvers import PROJECT_ROOT
from memsig.tasks.export import export
from memsig.vocab import Vocab

from conftest import compose_cfg

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)
LINES = [f"Line {i}: the quick brown fox jumps over the lazy dog, {'again ' * (i % 4)}and rests." for i in range(40)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of a small (untrained) LSTM as train.py writes it, and a text file."""
    root = tmp_path_factory.mktemp("export_task")
    torch.manual_seed(0)
    model = CharLM(Vocab(), hidden_size=16, embedding_size=8)
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, root / "model.ckpt")
    (root / "text.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return {"ckpt": root / "model.ckpt", "text": root / "text.txt"}


def run_main(*overrides: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python export.py <overrides>``, in this process."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [str(PROJECT_ROOT / "export.py"), *overrides])
    runpy.run_path(str(PROJECT_ROOT / "export.py"), run_name="__main__")


def words_of(folder: Path) -> list[int]:
    with h5py.File(folder / "train.hdf5", "r") as f:
        return f["words"][:].tolist()


def test_export_py_writes_an_lstmvis_folder_from_a_text_file(files, tmp_path, monkeypatch):
    run_main(
        "what=lstmvis",
        f"ckpt={files['ckpt']}",
        f"text_file={files['text']}",
        "seq_len=100",
        "states=[layer1.c]",
        f"hydra.run.dir={tmp_path}",
        monkeypatch=monkeypatch,
    )
    folder = tmp_path / "lstmvis"
    config = yaml.safe_load((folder / "lstm.yml").read_text(encoding="utf-8"))
    assert config["states"]["types"] == [{"type": "state", "layer": 1, "path": "layer1_c"}]
    expected = " ".join(Vocab().normalize(line) for line in LINES)
    assert Vocab().decode(words_of(folder)) == expected
    with h5py.File(folder / "states.hdf5", "r") as f:
        assert f["layer1_c"].shape == (len(expected), 16)


def test_lstmvis_of_a_data_split(files, tmp_path):
    data = ["data=text", f"data.corpus.path={files['text']}", "data.corpus.block=2"]
    export(compose_cfg([f"ckpt={files['ckpt']}", *data, "split=test"], tmp_path, config_name="export"))
    dm = TextDataModule(TextCorpus(str(files["text"]), method="blocks", block=2), Vocab())
    assert words_of(tmp_path / "lstmvis") == dm.ids("test").tolist()


def test_signature_tables_from_a_probe_run_dir(tmp_path):
    sig = make_signature()
    sig.save(tmp_path / "probe" / "signature.npz")
    result = export(
        compose_cfg(["what=signature", f"signature={tmp_path / 'probe'}"], tmp_path / "out", config_name="export")
    )
    assert [Path(p).name for p in result["written"]] == ["signature.csv", "signature.nc"]
    assert load_signature_nc(tmp_path / "out" / "signature.nc") == Signature.load(tmp_path / "probe" / "signature.npz")
    assert (tmp_path / "out" / "signature.csv").read_text(encoding="utf-8").count("\n") == 1 + 2 * 3 * 4


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["what=lstmvis"], ValueError, "needs ckpt="),
        (["what=lstmvis", "ckpt={root}/missing.ckpt"], CheckpointError, "does not exist"),
        (["what=lstmvis", "ckpt={ckpt}", "text_file={root}/empty.txt"], ValueError, "is empty"),
        (["what=lstmvis", "ckpt={ckpt}", "text_file={root}/foreign.txt"], ValueError, "no symbols"),
        (
            ["what=lstmvis", "ckpt={ckpt}", "split=validation", "data=text", "data.corpus.path={text}"],
            ValueError,
            "split must be one of",
        ),
        (["what=signature"], ValueError, "needs signature="),
        (["what=signature", "signature={root}/none.npz"], FileNotFoundError, "does not exist"),
        (["what=plots"], ValueError, "what must be one of"),
    ],
)
def test_bad_input_is_named(files, tmp_path, overrides, error, message):
    root = files["ckpt"].parent
    (root / "empty.txt").write_text("  \n", encoding="utf-8")
    (root / "foreign.txt").write_text("\u00e6\u00f8\u00e5 \u4e2d\u6587\n", encoding="utf-8")
    fields = {"root": root, "ckpt": files["ckpt"], "text": files["text"]}
    cfg = compose_cfg([o.format(**fields) for o in overrides], tmp_path, config_name="export")
    with pytest.raises(error, match=message):
        export(cfg)
    assert not (tmp_path / "lstmvis").exists()
