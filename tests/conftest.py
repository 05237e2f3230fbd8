"""Shared fixtures: composed configs and one tiny LM trained once per session."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import memsig
from memsig.data.corpora import Corpus, Splits
from memsig.data.text import TextDataModule
from memsig.resolvers import PROJECT_ROOT, data_dir
from memsig.vocab import Vocab

import system_deps

# Hugging Face models are built from configs: never reach for the hub (weights, kernels)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["USE_HUB_KERNELS"] = "0"


def require_system(*names: str) -> None:
    """Fail (never skip) a test whose system packages are missing, naming the install command."""
    missing = system_deps.missing(list(names))
    if missing:
        pytest.fail(system_deps.missing_message(missing), pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("system"):
        require_system(*marker.args)


class RandomSymbols(Corpus):
    """I.i.d. uniform symbols: nothing about x_{t-δ} is predictable from other symbols."""

    name = "random"

    def __init__(self, n: int = 40000, seed: int = 0):
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        self.text = ["".join(rng.choice(letters, n)) for _ in range(3)]

    def load(self) -> Splits:
        return Splits([self.text[0]], [self.text[1][:8000]], [self.text[2][:8000]])


@pytest.fixture(scope="session")
def random_dm() -> TextDataModule:
    """:class:`RandomSymbols` in batches of 16 x 64: recall there is memory, never inference."""
    return TextDataModule(RandomSymbols(), Vocab(), batch_size=16, seq_len=64)


CONF = PROJECT_ROOT / "conf"
TINY = data_dir() / "shakespeare" / "tinyshakespeare.txt"
# A tiny but real run: 1-layer LSTM-64 on the first 120k characters of tiny-shakespeare.
TINY_RUN = [
    "data.max_chars=120000",
    "data.batch_size=16",
    "data.seq_len=64",
    "model.hidden_size=96",
    "model.embedding_size=16",
    "model.lr=0.01",
    "trainer.max_epochs=3",
    "callbacks=model_checkpoint",
    "logger=csv",
]


def lm_batch(inputs: torch.Tensor, carry: bool = False, start: int = 0) -> dict[str, Any]:
    """A language-model batch of ``inputs`` ``[B, T]``: every position real, the stream's history
    starting at ``start``, the targets the inputs shifted by one (wrapping), ``carry`` as given."""
    b, t = inputs.shape
    return {
        "inputs": inputs,
        "targets": inputs.roll(-1, 1),
        "mask": torch.ones(b, t, dtype=torch.bool),
        "history": torch.arange(start, start + t).expand(b, t),
        "carry": carry,
    }


def compose_cfg(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose a config as ``python train.py`` would, with its run dir at ``output_dir``.

    ``compose`` sets no HydraConfig: it is set here (``return_hydra_config=True``) so
    ``${hydra:...}`` interpolations resolve, then the ``hydra`` node is dropped as in a run.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=[*overrides, f"paths.output_dir={output_dir}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def wandb_media_keys(run_folder: Path) -> set[str]:
    """The keys of the media an offline W&B run logged, read from its media files
    (``files/media/<kind>/<key>_<step>_<hash>.<ext>``), which the client writes as it logs."""
    media = run_folder / "files" / "media"
    return {
        re.sub(r"_\d+_[0-9a-f]+\.(html|plotly\.json|png)$", "", str(f.relative_to(kind)))
        for kind in media.iterdir()
        for f in kind.rglob("*.*")
    }


def wandb_log(run_folder: Path, *needles: bytes, timeout: float = 60.0) -> bytes:
    """The offline run's ``.wandb`` transaction log once it holds every needle (a background
    process writes it and may lag behind the client under load), else as it is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        log = next(run_folder.glob("*.wandb")).read_bytes()
        if all(n in log for n in needles) or time.monotonic() > deadline:
            return log
        time.sleep(0.5)


def free_port() -> int:
    """A TCP port free on this machine now, for a test's process group to meet on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_trainer(**settings: Any) -> L.Trainer:
    """A CPU trainer for a test: no logger, checkpoints, progress bar or model summary."""
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **settings,
    )


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only adds contention on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_corpus() -> Path:
    assert TINY.is_file(), f"tests read corpora from {data_dir()} (set MEMSIG_DATA_DIR); {TINY} is missing"
    return TINY


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> dict:
    """Train the tiny LM once through the real train task; its result and config."""
    from memsig.tasks.train import train

    out = tmp_path_factory.mktemp("trained_lm")
    result = train(cfg := compose_cfg(TINY_RUN, out))
    return {"result": result, "cfg": cfg, "dir": out}


@pytest.fixture(scope="session")
def espeak_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthesized speech corpus (~110 s train, ~40 s dev and test): split -> manifest."""
    from memsig.data.speech.synth import build_espeak_corpus

    require_system("espeak-ng")
    return build_espeak_corpus(
        tmp_path_factory.mktemp("espeak"), data_dir() / "ptb", {"train": 0.03, "dev": 0.01, "test": 0.01}, seed=0
    )


__all__ = ["compose_cfg", "memsig", "quiet_trainer", "require_system"]
