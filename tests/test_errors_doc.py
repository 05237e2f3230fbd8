"""docs/errors.md: every message of its table, rendered here from its bad input.

A row's first cell is the start of the message as printed (``<type>: <message>``, or the text of
a warning), ``…`` standing for the values of a run. Each row has a trigger below that makes that
message from a bad input through the real code; a row without a trigger, or a trigger without a
row, fails the test.
"""

import importlib.util
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from memsig.data.corpora import TextCorpus
from memsig.data.io import read_text
from memsig.data.text import TextDataModule
from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import check_compatible, data_config_for, load_model
from memsig.models.delay_line import DelayLine
from memsig.models.hf import HFCausalLM
from memsig.probe.probes import MLPProbe, RidgeProbe
from memsig.probe.signature import Signature
from memsig.probe.targets import resolve_probe
from memsig.report import Study, write_report, write_static
from memsig.report.study import StudySettings
from memsig.resolvers import PROJECT_ROOT
from memsig.tasks.probe import convergence_warning, refuse_vocab, write_gradients
from memsig.tasks.rundir import claim_run_dir
from memsig.vocab import Vocab

from conftest import RandomSymbols

DOC = PROJECT_ROOT / "docs" / "errors.md"


def rows() -> list[str]:
    """The first cell of every row of the doc's table, without its backticks."""
    return re.findall(r"^\| `(.+?)` \|", DOC.read_text(encoding="utf-8"), flags=re.M)


def raised(action: Callable[[], object]) -> str:
    """``<type>: <message>`` of the error ``action`` raises, as the entry points print it."""
    try:
        action()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    raise AssertionError("no error raised")


def logged(action: Callable[[], object]) -> str:
    """``<LEVEL>: <message>`` of the first warning ``action`` logs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        action()
    finally:
        root.removeHandler(handler)
    assert records, "nothing logged at WARNING"
    return f"{records[0].levelname}: {records[0].getMessage()}"


def _file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _dm(**options: object) -> TextDataModule:
    return _dm_of(Vocab(), **options)


def _dm_of(vocab: Vocab, **options: object) -> TextDataModule:
    return TextDataModule(RandomSymbols(4000), vocab, **{"batch_size": 4, "seq_len": 32, **options})


def _checkpoint(tmp: Path, model: CharLM) -> Path:
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp / "model.ckpt")
    return tmp / "model.ckpt"


def _system_message() -> str:
    spec = importlib.util.spec_from_file_location("system_deps", PROJECT_ROOT / "scripts" / "system_deps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.missing_message(["espeak-ng"])


def _torchaudio() -> object:
    from memsig.data.speech.backend import torchaudio

    return torchaudio("no_such_submodule")


def _diverging_step(scale: float) -> object:
    torch.manual_seed(0)
    model = CharLM(Vocab(), hidden_size=8, embedding_size=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    dm = _dm()
    dm.setup()
    return model.training_step(next(iter(dm.train_dataloader())), 0)


def _unconverged() -> str:
    conf = np.zeros((1, 2, 2, 2), dtype=np.int64)
    conf[:] = [[50, 0], [0, 50]]
    sig = Signature(["layer1.c"], [1, 2], ["x", "y"], conf, np.ones((1, 2)), np.full(2, 0.5))
    sig.meta["convergence"] = {"layer1.c@1.0#0": {"converged": [True, False]}}
    return convergence_warning(sig)


def _toy_signature(path: Path, lags: list[int]) -> Path:
    conf = np.zeros((1, len(lags), 2, 2), dtype=np.int64)
    conf[0, :] = [[80, 20], [20, 80]]
    return Signature(["s"], lags, ["x", "y"], conf, np.ones((1, len(lags))), np.full(2, 0.5)).save(path)


def _run_cfg(tmp: Path, **settings: object) -> object:
    return OmegaConf.create({"paths": {"output_dir": str(tmp)}, **settings})


def _interrupted_other_settings(tmp: Path) -> object:
    claim_run_dir(_run_cfg(tmp, model={"lr": 0.003}), "metrics.json")
    return claim_run_dir(_run_cfg(tmp, model={"lr": 0.0003}), "metrics.json")


def _run_data(tmp: Path) -> Path:
    (tmp / "run" / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        {"data": {"_target_": "memsig.data.speech.SpeechDataModule", "batch": 8}},
        tmp / "run" / ".hydra" / "config.yaml",
    )
    return tmp / "run" / "checkpoints" / "last.ckpt"


TRIGGERS: dict[str, Callable[[Path], str]] = {
    "memsig needs these system packages, which are not installed:…": lambda tmp: _system_message(),
    "TorchaudioError: the speech path needs torchaudio, which did not load against torch …": lambda tmp: raised(
        _torchaudio
    ),
    "CorpusError: corpus file … does not exist. Check the data path (MEMSIG_DATA_DIR or the data.* settings)…": (
        lambda tmp: raised(lambda: read_text(tmp / "missing.txt"))
    ),
    "CorpusError: corpus file … is empty; point the config at a file with text in it": lambda tmp: raised(
        lambda: read_text(_file(tmp, "empty.txt", " \n"))
    ),
    "CorpusError: corpus file … is not valid UTF-8 (byte …). Convert it first, e.g. …iconv -f latin1 -t utf-8 …": (
        lambda tmp: raised(lambda: read_text(_file(tmp, "latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"))))
    ),
    "CorpusError: corpus file … looks binary, not text (NUL bytes near its start: …)…": lambda tmp: raised(
        lambda: read_text(_file(tmp, "b.bin", bytes(range(256)) * 4))
    ),
    "CorpusError: corpus file … is UTF-16 text, not UTF-8. Convert it first, e.g. …iconv -f utf-16 -t utf-8 …": (
        lambda tmp: raised(lambda: read_text(_file(tmp, "u16.txt", "\u00dcn\u00efc\u00f6d\u00e9\n".encode("utf-16"))))
    ),
    "CorpusError: the dev split of corpus … is empty: the corpus gives train/dev/test …": lambda tmp: raised(
        lambda: TextDataModule(TextCorpus(str(_file(tmp, "f.txt", "some text here\n" * 500)), dev=0), Vocab()).setup()
    ),
    "CorpusError: a split of … symbols is too short for … streams; lower data.batch_size or use more text": (
        lambda tmp: raised(lambda: _dm(batch_size=3000).train_dataloader())
    ),
    "ValueError: data.batch_size must be a positive integer; got 0": lambda tmp: raised(lambda: _dm(batch_size=0)),
    "WARNING: corpus …: … characters (…%) are outside the symbol set and dropped (vocab.oov=drop)…": (
        lambda tmp: logged(
            lambda: TextDataModule(
                TextCorpus(str(_file(tmp, "zh.txt", ("\u6211\u4eec\u4eca\u5929" * 40 + " and some tea\n") * 100))),
                Vocab(),
            ).setup()
        )
    ),
    "ValueError: symbol … is not in the symbol set …: normalize the text first…": lambda tmp: raised(
        lambda: Vocab().encode("\u00e9")
    ),
    "ValueError: the vocab has … symbols, but text is encoded as uint8 ids (at most …); keep fewer symbols (vocab.symbols, vocab.extra_symbols)": (
        lambda tmp: raised(lambda: _dm_of(Vocab(extra_symbols="".join(map(chr, range(0x4E00, 0x4F00))))).setup())
    ),
    "VocabMismatchError: the checkpoint was made with another symbol set; …": lambda tmp: raised(
        lambda: check_compatible(
            torch.load(_checkpoint(tmp, CharLM(Vocab())), weights_only=True), CharLM(Vocab(oov="unk"))
        )
    ),
    "CheckpointError: checkpoint … does not exist; pass the path of a .ckpt file from a train run": lambda tmp: raised(
        lambda: load_model(tmp / "missing.ckpt")
    ),
    "CheckpointError: checkpoint … cannot be read: it is not a PyTorch checkpoint (…); pass a .ckpt file from a train run": (
        lambda tmp: raised(lambda: load_model(_file(tmp, "notes.ckpt", "epoch 3\n")))
    ),
    "CheckpointError: the checkpoint has another architecture: …; set the model options to match": lambda tmp: raised(
        lambda: check_compatible(
            torch.load(_checkpoint(tmp, CharLM(Vocab(), hidden_size=8)), weights_only=True),
            CharLM(Vocab(), hidden_size=16),
        )
    ),
    "CheckpointError: no run config at … to tell which data … was trained on; pass data=<corpus> explicitly": (
        lambda tmp: raised(lambda: data_config_for(None, tmp / "loose.ckpt"))
    ),
    "FloatingPointError: training loss is … at step … (diverged: above … × log …, the uniform guess's loss): lower model.lr…": (
        lambda tmp: raised(lambda: _diverging_step(1e4))
    ),
    "FloatingPointError: training loss is nan at step …: lower model.lr, set trainer.gradient_clip_val, …": (
        lambda tmp: raised(lambda: _diverging_step(float("nan")))
    ),
    "ValueError: model.config.model_type=… has no memsig network (its states are read per family); choose one of …": (
        lambda tmp: raised(lambda: HFCausalLM(Vocab(), {"model_type": "llama"}))
    ),
    "ValueError: model.config.vocab_size=… is set; leave it out: the symbol set (vocab, … symbols) sets it": (
        lambda tmp: raised(lambda: HFCausalLM(Vocab(), {"model_type": "mamba", "vocab_size": 100}))
    ),
    "ValueError: model.config has no option … for model_type=… (a typo?)…": lambda tmp: raised(
        lambda: HFCausalLM(Vocab(), {"model_type": "mamba", "hiden_size": 8})
    ),
    "ValueError: a window of … symbols is longer than the Transformer's context (model.config.n_positions=…)…": (
        lambda tmp: raised(
            lambda: HFCausalLM(
                Vocab(), {"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 1, "n_positions": 4}
            )(torch.zeros(1, 5, dtype=torch.long))
        )
    ),
    "ValueError: probe state … is not exposed by the model; it has […]": lambda tmp: raised(
        lambda: resolve_probe(DelayLine(Vocab(), 2), ["layer1.c"], [1])
    ),
    "TypeError: … exposes no input embedding (embed, embedded_states; see memsig.states.GradientSource): state gradients need it; run without gradients=...": (
        lambda tmp: raised(lambda: write_gradients(OmegaConf.create({}), DelayLine(Vocab(), 2), _dm(), None, tmp, []))
    ),
    "TypeError: the MLP probe has no option …; it takes: …": lambda tmp: raised(lambda: MLPProbe(depth=2)),
    "ValueError: probe.lags must be a list of integers; got …: e.g. 'probe.lags=[1,2,3]'…": lambda tmp: raised(
        lambda: MLPProbe(lags="abc")
    ),
    "ValueError: probe.lags: lag … reaches further back than any position of the … split has history (…)…": (
        lambda tmp: raised(lambda: RidgeProbe(lags=[1, 100000]).fit(DelayLine(Vocab(), 2), _dm(), progress=False))
    ),
    "MemoryError: the ridge preview needs about … GiB for its moments (…), more than the … GiB free on …": (
        lambda tmp: raised(
            lambda: RidgeProbe(lags=[1, 2], features=10**7).fit(DelayLine(Vocab(), 2), _dm(), progress=False)
        )
    ),
    "WARNING: … heads did not converge: …": lambda tmp: _unconverged(),
    "SignatureError: … is not a memsig signature file: …": lambda tmp: raised(
        lambda: Signature.load(_file(tmp, "x.npz", b"not an archive"))
    ),
    "ValueError: … vs …: signatures share no (lag, symbol) cell: the first has lags […], the second […]…": (
        lambda tmp: raised(
            lambda: write_static(
                Study.from_signatures([_toy_signature(tmp / "a.npz", [1, 2]), _toy_signature(tmp / "b.npz", [9])]),
                tmp / "cmp",
            )
        )
    ),
    "ValueError: state … is not a probed state of …": lambda tmp: raised(
        lambda: Study.from_signatures(
            [_toy_signature(tmp / "a.npz", [1, 2]), _toy_signature(tmp / "b.npz", [1, 2])],
            settings=StudySettings(state="layer1.c"),
        )
    ),
    "ReportError: … is not a directory; a report needs one of:…": lambda tmp: raised(
        lambda: write_report(tmp / "nothing")
    ),
    "RunDirError: … holds a finished run (…); its results stay as they are: choose a new run dir (hydra.run.dir=...)…": (
        lambda tmp: raised(lambda: (_file(tmp, "metrics.json", "{}"), claim_run_dir(_run_cfg(tmp), "metrics.json")))
    ),
    "RunDirError: … holds an interrupted run with other settings (…): run it again with its own settings…": (
        lambda tmp: raised(lambda: _interrupted_other_settings(tmp))
    ),
    "RunDirError: cannot write into … (…), where this run writes …: fix its permissions or choose another run dir…": (
        lambda tmp: raised(lambda: (_file(tmp, "checkpoints", "a file"), claim_run_dir(_run_cfg(tmp), "metrics.json")))
    ),
    "ValueError: the symbol set comes from the checkpoint (…); drop the vocab override (+vocab...)…": lambda tmp: (
        raised(lambda: refuse_vocab(OmegaConf.create({"vocab": {"extra_symbols": "!?"}}), tmp / "model.ckpt"))
    ),
    "ValueError: data.… does not apply to the data … was trained on (…)…": lambda tmp: raised(
        lambda: data_config_for(OmegaConf.create({"max_chars": 1000}), _run_data(tmp))
    ),
}


def pattern(message: str) -> re.Pattern[str]:
    """The row's text as a regex: ``…`` stands for anything, the rest is literal."""
    return re.compile(".*?".join(map(re.escape, message.split("…"))), flags=re.S)


def test_every_row_has_its_trigger_and_every_trigger_its_row():
    assert sorted(rows()) == sorted(TRIGGERS)


@pytest.mark.parametrize("message", list(TRIGGERS))
def test_the_bad_input_prints_the_documented_message(message, tmp_path):
    text = TRIGGERS[message](tmp_path)
    assert pattern(message).match(text), f"documented: {message}\nprinted:    {text}"
