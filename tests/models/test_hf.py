"""Hugging Face causal LMs through the one state interface: every-step states against the model's
own generation path (one token at a time with its cache), carried state, training, probing."""

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.models.xlstm.modeling_xlstm import xLSTMCache

from memsig.analysis.state_gradients import jacobians, state_gradients
from memsig.models import load_model
from memsig.models.hf import HFCausalLM
from memsig.models.hf.mamba import SelectiveScan
from memsig.probe.probes import RidgeProbe
from memsig.report.study import describe_model
from memsig.states import GradientSource, StateBatch, StateSource
from memsig.tasks.train import train
from memsig.vocab import Vocab

from conftest import compose_cfg
from conftest import lm_batch as batch

TINY = {
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 16,
        "n_layer": 2,
        "n_head": 2,
        "n_positions": 32,
        "bos_token_id": None,
        "eos_token_id": None,
    },
    "mamba": {"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2, "state_size": 4, "expand": 2},
    "rwkv": {"model_type": "rwkv", "hidden_size": 16, "num_hidden_layers": 2, "rescale_every": 0},
    "recurrent_gemma": {
        "model_type": "recurrent_gemma",
        "hidden_size": 16,
        "lru_width": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "block_types": ["recurrent"],
    },
    "xlstm": {
        "model_type": "xlstm",
        "hidden_size": 64,
        "qk_dim_factor": 1.0,
        "num_heads": 4,
        "num_hidden_layers": 2,
        "autocast_kernel_dtype": "float32",
    },
}
FAMILIES = list(TINY)
MAX_DIFF = 1e-4


def make(family: str) -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(Vocab(), TINY[family]).eval()


def record_blocks(blocks: nn.ModuleList, into: list[list[torch.Tensor]]) -> list:
    """Forward hooks that append each block's output (its residual stream) to ``into[l]``."""

    def hook(l: int):
        return lambda module, args, out: into[l].append(out[0] if isinstance(out, tuple) else out)

    return [block.register_forward_hook(hook(l)) for l, block in enumerate(blocks)]


def recurrent_states(model: nn.Module, cache: object) -> dict[str, torch.Tensor]:
    """The recurrent states ``[B, D]`` by name in a model's own cache after a step."""
    layers = range(model.config.num_hidden_layers)
    if model.config.model_type == "mamba":
        return {f"layer{l + 1}.ssm": cache.get_recurrent_state(l).flatten(1) for l in layers}
    if model.config.model_type == "xlstm":
        return {
            f"layer{l + 1}.{name}": s.flatten(1) for l in layers for name, s in zip(("C", "n"), cache.rnn_state[l][:2])
        }
    if model.config.model_type == "recurrent_gemma":
        return {f"layer{l + 1}.rglru": model.model.layers[l].temporal_block.rg_lru.recurrent_states for l in layers}
    if model.config.model_type == "rwkv":
        channel_shift, time_shift, num, den, _ = cache
        return {
            f"layer{l + 1}.{name}": s
            for l in layers
            for name, s in (
                ("wkv_num", num[:, :, l]),
                ("wkv_den", den[:, :, l]),
                ("shift", torch.cat([time_shift[:, :, l], channel_shift[:, :, l]], dim=1)),
            )
        }
    return {}


def stepped(lm: HFCausalLM, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits ``[B, T, V]`` and states by name of the Hugging Face model run one token at a time with
    its own cache, as generation runs it, one row at a time (RWKV's one-token path mixes several
    rows wrongly)."""
    rows = [stepped_row(lm, row[None]) for row in inputs]
    return torch.cat([r[0] for r in rows]), {name: torch.cat([r[1][name] for r in rows]) for name in rows[0][1]}


@torch.no_grad()
def stepped_row(lm: HFCausalLM, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`stepped` of one row ``[1, T]``, by an untouched Hugging Face model with the same weights."""
    model = AutoModelForCausalLM.from_config(lm.net.config).eval()
    model.load_state_dict(lm.net.model.state_dict())
    family = model.config.model_type
    blocks = {
        "gpt2": lambda: model.transformer.h,
        "mamba": lambda: model.backbone.layers,
        "rwkv": lambda: model.rwkv.blocks,
        "xlstm": lambda: model.backbone.blocks,
    }.get(family, lambda: model.model.layers)()
    residual: list[list[torch.Tensor]] = [[] for _ in blocks]
    hooks = record_blocks(blocks, residual)
    logits, recurrent, cache = [], [], None
    try:
        for t in range(inputs.shape[1]):
            token = inputs[:, t : t + 1]
            if family == "gpt2":
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
            elif family == "mamba":
                out = model(input_ids=token, cache_params=cache, use_cache=True)
                cache = out.cache_params
            elif family == "xlstm":
                cache = cache or xLSTMCache(model.config, max_batch_size=1, dtype=torch.float32)
                out = model(input_ids=token, cache_params=cache, use_cache=True)
            elif family == "rwkv":
                out = model(input_ids=token, state=cache, use_cache=True)
                cache = out.state
            else:  # the states live in the modules; a cache passed after the first step keeps them
                out = model(
                    input_ids=token,
                    position_ids=torch.tensor([[t]]),
                    attention_mask={"sliding_attention": None},  # no attention block: no mask to build
                    past_key_values=cache,
                    use_cache=True,
                )
                cache = DynamicCache(config=model.config)
            recurrent.append({k: v.clone() for k, v in recurrent_states(model, cache).items()})
            logits.append(out.logits)
    finally:
        for h in hooks:
            h.remove()
    states = {f"layer{l + 1}.residual": torch.cat(r, dim=1) for l, r in enumerate(residual)}
    states |= {name: torch.stack([r[name] for r in recurrent], dim=1) for name in recurrent[0]}
    return torch.cat(logits, dim=1), states


@pytest.mark.parametrize("family", FAMILIES)
def test_every_step_states_equal_the_generation_path(family, one_thread):
    lm = make(family)
    inputs = torch.randint(0, len(lm.vocab), (3, 12))
    sb = lm.states(batch(inputs))
    logits, states = stepped(lm, inputs)
    assert isinstance(lm, StateSource) and isinstance(sb, StateBatch)
    assert list(sb.states) == lm.state_names and set(states) == set(lm.state_names)
    for name, s in sb.states.items():
        assert s.shape[2] == lm.state_dims[name]
        assert (s - states[name]).abs().max() < MAX_DIFF, name
    assert (sb.next_logits - logits).abs().max() < MAX_DIFF
    own = AutoModelForCausalLM.from_config(lm.net.config).eval()
    own.load_state_dict(lm.net.model.state_dict())
    assert (own(inputs, use_cache=False).logits - logits).abs().max() < MAX_DIFF  # its own forward
    assert lm.kernel_params("layer2.residual") == sum(p.numel() for p in lm.net.blocks[1].parameters())


def test_the_selective_scans_hand_written_backward_is_the_gradient():
    """Mamba's scan (:class:`SelectiveScan`) against finite differences, float64, every input."""
    gen = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, generator=gen)

    dt, dtx, bs, a, s0 = draw(2, 5, 3).abs(), draw(2, 5, 3), draw(2, 5, 2), -draw(3, 2).abs(), draw(2, 3, 2)
    assert torch.autograd.gradcheck(SelectiveScan.apply, tuple(x.requires_grad_() for x in (dt, dtx, bs, a, s0)))


@pytest.mark.parametrize("family", ["mamba", "rwkv", "recurrent_gemma", "xlstm"])
def test_a_recurrent_network_carries_its_state_across_windows(family, one_thread):
    lm = make(family)
    inputs = torch.randint(0, len(lm.vocab), (2, 14))
    whole = lm.states(batch(inputs))
    first = lm.states(batch(inputs[:, :5]))
    second = lm.states(batch(inputs[:, 5:], carry=True, start=5))
    for name in lm.state_names:
        joined = torch.cat([first.states[name], second.states[name]], dim=1)
        assert (joined - whole.states[name]).abs().max() < MAX_DIFF, name
    assert torch.equal(second.history, whole.history[:, 5:])
    carried = lm._carried["states"]
    for a, b in zip(lm._unpack_carried(lm._pack_carried(carried)), carried):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("family", FAMILIES)
def test_state_gradients_differentiate_the_states_of_the_window_after_its_context(family, one_thread):
    """``embedded_states`` from the embeddings, after a context run without gradient, gives the
    states of context and window run as one (every row of its replicas alike), and the Jacobians
    state gradients take in chunks of units are those of autograd over each window."""
    lm = make(family)
    ids = torch.randint(0, len(lm.vocab), (60,), generator=torch.Generator().manual_seed(2))
    context, window = ids[None, 10:18].expand(2, -1), ids[None, 18:23].expand(2, -1)
    whole = lm.states(batch(torch.cat([context, window], dim=1)))
    after = lm.embedded_states(lm.embed(window).repeat(3, 1, 1), context, repeat=3)
    for name in lm.state_names:
        assert (after[name] - whole.states[name][:, 8:].repeat(3, 1, 1)).abs().max() < MAX_DIFF, name
    assert isinstance(lm, GradientSource)
    names, lags, warm = lm.state_names[-2:], 3, 4
    positions = torch.tensor([20, 41])
    jac, inputs = jacobians(lm, ids, positions, lags, warm, names, chunk=5, mode="reverse")
    for n, t in enumerate(positions.tolist()):
        ctx, win = ids[None, t - lags - warm : t - lags], ids[None, t - lags : t + 1]
        assert inputs[n].tolist() == win[0].flip(0).tolist()
        for name in names:
            full = torch.autograd.functional.jacobian(
                lambda e, name=name, ctx=ctx: lm.embedded_states(e, ctx)[name][0, -1], lm.embed(win).detach()
            )[:, 0]  # [D, W, E]
            for delta in range(lags + 1):
                torch.testing.assert_close(jac[name][n, delta], full[:, lags - delta], atol=1e-5, rtol=1e-4)
    grad = state_gradients(lm, ids, lags=lags, positions=6, batch=3, warmup=warm, states=names)
    assert grad.states == names and (grad.norm[:, 0] > 0).all()  # every state depends on the last input


def test_the_transformer_sees_one_window():
    lm = make("gpt2")
    sb = lm.states(batch(torch.randint(0, len(lm.vocab), (2, 10)), carry=True, start=50))
    assert sb.history[0].tolist() == list(range(10))  # history capped at the window
    with pytest.raises(ValueError, match=r"longer than the Transformer's context \(model.config.n_positions=32\)"):
        lm.states(batch(torch.zeros(1, 40, dtype=torch.long)))


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="model_type='llama' has no memsig network.*gpt2, mamba"):
        HFCausalLM(Vocab(), {"model_type": "llama"})
    with pytest.raises(ValueError, match="model.config has no model_type"):
        HFCausalLM(Vocab(), {"hidden_size": 8})
    with pytest.raises(ValueError, match="no option 'hiden_size' for model_type='mamba' \\(a typo\\?\\)"):
        HFCausalLM(Vocab(), {**TINY["mamba"], "hiden_size": 8})
    with pytest.raises(ValueError, match="vocab_size=100 is set; leave it out"):
        HFCausalLM(Vocab(), {**TINY["mamba"], "vocab_size": 100})
    with pytest.raises(
        ValueError, match=r"block_types=\['recurrent', 'attention'\].*set model.config.block_types: \[recurrent\]"
    ):
        HFCausalLM(Vocab(), {**TINY["recurrent_gemma"], "block_types": ["recurrent", "attention"]})
    with pytest.raises(ValueError, match="hidden_size·qk_dim_factor = 16 and hidden_size·v_dim_factor = 32 must be"):
        HFCausalLM(Vocab(), {**TINY["xlstm"], "hidden_size": 32, "qk_dim_factor": 0.5})
    with pytest.raises(ValueError, match="rescale_every=6: .*set model.config.rescale_every: 0"):
        HFCausalLM(Vocab(), {**TINY["rwkv"], "rescale_every": 6})


@pytest.mark.parametrize(
    ("config", "small"),
    [
        ("transformer", ["model.config.n_embd=16", "model.config.n_head=2"]),
        ("mamba", ["model.config.hidden_size=16", "model.config.num_hidden_layers=2"]),
        ("rwkv", ["model.config.hidden_size=16", "model.config.num_hidden_layers=2"]),
        ("griffin", ["model.config.hidden_size=16", "model.config.lru_width=16", "model.config.num_hidden_layers=2"]),
        (
            "xlstm",
            ["model.config.num_hidden_layers=1", "model.config.ffn_proj_factor=1.0"],
        ),
    ],
)
def test_fast_dev_run(config, small, tmp_path: Path, one_thread):
    cfg = compose_cfg(["debug=fdr", f"model={config}", "data.max_chars=20000", "data.batch_size=8", *small], tmp_path)
    result = train(cfg)
    assert {"train/loss", "val/loss", "test/loss", "test/ppl"} <= set(result["metrics"])


def test_a_tiny_mamba_is_probed_through_the_interface(random_dm, one_thread):
    lm = make("mamba")
    sig = RidgeProbe(lags=[1, 2], features=32).fit(lm, random_dm, progress=False)
    assert set(lm.state_names) <= set(sig.states) and sig.accuracy.shape[1] == 2


@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_a_checkpoint_rebuilds_the_model_and_its_carried_state(family, tmp_path: Path):
    lm = make(family)
    x = torch.randint(0, len(lm.vocab), (2, 6))
    lm._token_losses(batch(x), "train")  # a carried training state, saved with the weights
    checkpoint = {"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams)}
    lm.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "tiny.ckpt")
    again = load_model(tmp_path / "tiny.ckpt", expected=HFCausalLM)
    assert torch.equal(again(x)[0], lm(x)[0])
    again.on_load_checkpoint(torch.load(tmp_path / "tiny.ckpt", weights_only=True))
    for a, b in zip(again._carried["train"], lm._carried["train"]):
        assert all(torch.equal(s, t) for s, t in zip(a, b))


def test_the_report_names_the_family_and_its_sizes():
    meta = {"model": {"class": "HFCausalLM", **make("mamba").hparams}}
    assert describe_model(meta) == "HFCausalLM (model_type mamba, num_hidden_layers 2, hidden_size 16)"
