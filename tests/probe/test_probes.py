"""One probe interface: presets build probes by ``_target_``, both kinds fit the same way, options are checked."""

from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import memsig
from memsig.models.delay_line import DelayLine
from memsig.probe import MLPProbe, RidgeProbe
from memsig.resolvers import PROJECT_ROOT
from memsig.tasks.signatures import probe_settings
from memsig.vocab import Vocab

from conftest import compose_cfg

VOCAB = Vocab()
LAGS = [1, 2, 3, 5]


def preset(name: str, tmp_path) -> object:
    cfg = compose_cfg(["ckpt=unused", f"probe={name}"], tmp_path, "probe")
    return hydra.utils.instantiate(cfg.probe)


@pytest.mark.parametrize(("name", "kind"), [("default", MLPProbe), ("paper", MLPProbe), ("quick", RidgeProbe)])
def test_every_preset_builds_its_probe_class(name, kind, tmp_path):
    probe = preset(name, tmp_path)
    assert type(probe) is kind
    assert probe.options["lags"] == list(range(1, 21))


def test_both_probes_fit_a_delay_line_through_one_interface(random_dm, one_thread):
    """A delay line of depth 3 keeps lags ≤ 3 exactly and nothing beyond, whichever probe reads it."""
    source = DelayLine(VOCAB, k=3)
    mlp = MLPProbe(lags=LAGS, width=32, controls=[], eval_every=25, seeds=1)
    ridge = RidgeProbe(lags=LAGS, features=64)
    for probe in (mlp, ridge):
        sig = probe.fit(source, random_dm, meta={"note": "delay line"}, progress=False)
        assert sig.meta["note"] == "delay line" and sig.meta["probe"]["kind"] == probe.kind
        np.testing.assert_array_less(0.99, sig.accuracy[0, :3])
        assert sig.accuracy[0, 3] < 0.2  # lag 5: chance (random symbols)
    assert sig.provenance().startswith("ridge preview")
    again = memsig.probe(source, random_dm, probe=ridge)  # the API takes a built probe too
    np.testing.assert_array_equal(again.confusion, sig.confusion)


def test_an_unknown_option_is_named_when_the_probe_is_built():
    with pytest.raises(TypeError, match=r"no option 'depth'.*hidden_layers"):
        MLPProbe(depth=2)
    with pytest.raises(TypeError, match=r"no option 'hidden_layers'.*features"):
        RidgeProbe(hidden_layers=2)
    with pytest.raises(ValueError, match="unknown probe 'lstm'; one of mlp, ridge"):
        memsig.probe(DelayLine(VOCAB, k=1), PROJECT_ROOT, probe="lstm")


def test_a_variant_takes_the_options_of_its_probe_kind(tmp_path):
    """depth_study's deeper decoders: two hidden layers for the MLP probe, twice the features for the ridge one."""
    for size, key, value in (("small", "features", 1024), ("paper", "hidden_layers", 2)):
        cfg = compose_cfg(["experiment=depth_study", f"size={size}"], tmp_path / size)
        settings = probe_settings(cfg)
        deep = hydra.utils.instantiate(settings["deep_decoders"])
        assert deep.options[key] == value and deep.options["states"] == ["layer3", "layer4"]
        assert OmegaConf.create(settings["main"]).get(key) != value


def test_the_mlp_probe_depends_on_its_seed_alone(random_dm, one_thread):
    """Whatever drew numbers from torch's global generator before, the same probe seed gives the
    same signature (the positions' order of every pass comes from the seed)."""
    probe = MLPProbe(lags=[1, 4], width=16, controls=[], eval_every=10, max_steps=60, batch_positions=64, seed=3)
    signatures = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        signatures.append(probe.fit(DelayLine(VOCAB, k=2), random_dm, progress=False))
    np.testing.assert_array_equal(signatures[0].confusion, signatures[1].confusion)
    assert signatures[0].meta["convergence"] == signatures[1].meta["convergence"]
