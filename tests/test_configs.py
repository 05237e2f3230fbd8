"""Every option of every config group composes, and the objects it names build."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from memsig.states import StateSource
from memsig.tasks.utils import instantiate_all

from conftest import CONF, compose_cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("data", options("data"))
def test_data_configs_build(data, tmp_path: Path):
    extra = {
        "text": ["data.corpus.path=/some/file.txt"],
        "wsj": ["data.corpus.root=/ldc/wsj"],
        "wsj_speech": ["data.corpus.root=/ldc/wsj"],
    }.get(data, [])
    cfg = compose_cfg([f"data={data}", *extra], tmp_path)
    vocab = hydra.utils.instantiate(cfg.vocab)
    dm = hydra.utils.instantiate(cfg.data, vocab=vocab)
    assert dm.vocab is vocab and dm.corpus is not None
    assert cfg.data.corpus._target_.startswith("memsig.data")


@pytest.mark.parametrize("model", options("model"))
def test_model_configs_build(model, tmp_path: Path):
    extra = {"las": ["data=librivox"]}.get(
        model, []
    )  # a speech model reads its feature sizes from a speech data config
    cfg = compose_cfg([f"model={model}", *extra], tmp_path)
    lm = hydra.utils.instantiate(cfg.model, vocab=hydra.utils.instantiate(cfg.vocab))
    assert isinstance(lm, StateSource) and lm.state_names
    if model in ("lstm", "gru"):
        assert lm.hparams.cell == model


@pytest.mark.parametrize("group", ["logger", "callbacks", "trainer", "experiment", "debug", "size"])
def test_group_options_compose_and_resolve(group, tmp_path: Path):
    for option in options(group):
        cfg = compose_cfg([f"{group}={option}"], tmp_path)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        if group == "callbacks":
            assert all(hasattr(cb, "setup") for cb in instantiate_all(cfg.callbacks))
        if group == "trainer" and option in ("cpu", "ddp_cpu", "default"):
            hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)


def test_experiment_overlays_win(tmp_path: Path):
    cfg = compose_cfg(["experiment=ptb_lstm320"], tmp_path)
    assert cfg.data.corpus._target_ == "memsig.data.PTBCorpus"
    assert cfg.trainer.max_time == "00:00:10:00"
    cfg = compose_cfg(["experiment=ptb_lstm320", "trainer.max_time=null"], tmp_path)
    assert cfg.trainer.max_time is None  # the command line wins over the experiment


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_configs_compose(launcher):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert target.startswith("hydra_plugins.hydra_submitit_launcher") and ("Slurm" in target) == (launcher == "slurm")
    assert cfg.hydra.launcher.timeout_min > 0


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MEMSIG_DATA_DIR", str(tmp_path))
    cfg = compose_cfg([], tmp_path / "out")
    assert cfg.data.corpus.path == f"{tmp_path}/shakespeare/tinyshakespeare.txt"
