"""LAS: shapes, the grapheme convention of its states, alignment, decoding, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from memsig.models.checkpoint import CheckpointError, check_compatible
from memsig.models.las import LAS
from memsig.models.las.align import attention_centres, ctc_centres, frames_at
from memsig.models.las.decode import beam_search, ctc_greedy, greedy
from memsig.models.las.listener import stack_frames
from memsig.vocab import Vocab

from conftest import free_port, quiet_trainer

VOCAB = Vocab()
TINY = dict(
    feature_size=20,
    listener_hidden=16,
    reductions=[2, 2, 2],
    embedding_size=8,
    speller_hidden=24,
    attention_size=12,
    warmup_steps=0,
)


def batch_of(texts: list[str], frames: list[int], feature_size: int = 20, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tokens = [VOCAB.encode(t).long() for t in texts]
    length = max(len(t) for t in tokens)
    return {
        "features": torch.randn(len(texts), max(frames), feature_size, generator=gen),
        "feature_lengths": torch.tensor(frames),
        "tokens": torch.stack([torch.cat([t, t.new_zeros(length - len(t))]) for t in tokens]),
        "token_lengths": torch.tensor([len(t) for t in tokens]),
        "texts": texts,
        "carry": False,
    }


@pytest.fixture(scope="module")
def model() -> LAS:
    torch.manual_seed(0)
    return LAS(VOCAB, **TINY).eval()


def test_stack_frames_drops_the_remainder_and_divides_lengths() -> None:
    x = torch.arange(2 * 7 * 3, dtype=torch.float).reshape(2, 7, 3)
    y, lens = stack_frames(x, torch.tensor([7, 3]), 2)
    assert y.shape == (2, 3, 6) and lens.tolist() == [3, 1]
    assert torch.equal(y[0, 1], torch.cat([x[0, 2], x[0, 3]]))


def test_listener_layers_run_at_their_reduced_rates(model: LAS) -> None:
    b = batch_of(["hello", "a"], [80, 41])
    out = model.listener(b["features"], b["feature_lengths"])
    assert [o.shape[1] for o, _ in out] == [40, 20, 10]
    assert [l.tolist() for _, l in out] == [[40, 20], [20, 10], [10, 5]]
    assert all(o.shape[-1] == 32 for o, _ in out)


def test_padding_does_not_change_an_utterance(model: LAS) -> None:
    """Listener and speller results of an utterance do not depend on what it is batched with."""
    b = batch_of(["the cat", "a dog sat"], [64, 80])
    alone = {k: v[:1] for k, v in b.items() if k != "carry"}
    alone["features"] = alone["features"][:, :64]
    alone["tokens"] = alone["tokens"][:, :7]
    both, one = model.states(b), model.states({**alone, "carry": False})
    for name in ("listener1", "listener3", "speller1.h", "speller.query"):
        assert torch.allclose(both.states[name][0, :7], one.states[name][0], atol=1e-5), name


def test_targets_put_eos_after_each_transcript(model: LAS) -> None:
    b = batch_of(["ab", "abc"], [40, 40])
    inputs, targets = model._targets(b["tokens"], b["token_lengths"])
    a, bb, c = (VOCAB.encode(x).item() for x in "abc")
    sos, eos = model.speller.sos, model.eos
    assert inputs.tolist() == [[sos, a, bb, 0], [sos, a, bb, c]]
    assert targets.tolist() == [[a, bb, eos, -100], [a, bb, c, eos]]


def test_speller_states_follow_the_grapheme_convention(model: LAS) -> None:
    """The speller state at t has consumed graphemes 0..t and nothing after."""
    b1 = batch_of(["abcdef"], [60])
    b2 = batch_of(["abcxyz"], [60])
    s1, s2 = model.states(b1).states, model.states(b2).states
    for name in ("speller1.h", "speller1.c", "speller.query"):
        assert torch.allclose(s1[name][0, :3], s2[name][0, :3], atol=1e-6), name  # same graphemes 0..2
        assert not torch.allclose(s1[name][0, 3], s2[name][0, 3]), name  # grapheme 3 differs


def test_states_shapes_symbols_and_history(model: LAS) -> None:
    b = batch_of(["hello world", "hi"], [120, 60])
    sb = model.states(b)
    assert set(sb.states) == set(model.state_names)
    for name, x in sb.states.items():
        assert x.shape == (2, 11, model.state_dims[name]), name
    assert torch.equal(sb.symbols, b["tokens"])
    assert sb.history[1].tolist() == list(range(11))
    assert sb.mask[1].tolist() == [True, True] + [False] * 9
    assert sb.next_logits.shape == (2, 11, len(VOCAB))
    fwd, bwd, both = (sb.states[f"listener2{p}"] for p in (".fwd", ".bwd", ""))
    assert torch.equal(torch.cat([fwd, bwd], -1), both)


def test_ctc_forced_alignment_finds_the_spans() -> None:
    """A CTC head that is certain of a path: the centres are its token spans' midpoints."""
    blank, path = 4, [4, 1, 1, 4, 2, 4, 4, 2, 2, 2, 3, 4]
    lp = torch.full((1, len(path), 5), -20.0)
    lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    centres, ok = ctc_centres(
        lp.log_softmax(-1), torch.tensor([12]), torch.tensor([[1, 2, 2, 3]]), torch.tensor([4]), blank, reduction=4
    )
    assert ok.tolist() == [True]
    assert centres[0].tolist() == [(1 + 3) / 2 * 4, (4 + 5) / 2 * 4, (7 + 10) / 2 * 4, (10 + 11) / 2 * 4]
    short, ok = ctc_centres(
        lp[:, :3].log_softmax(-1),
        torch.tensor([3]),
        torch.tensor([[1, 2, 2, 3]]),
        torch.tensor([4]),
        blank,
        reduction=4,
    )
    assert ok.tolist() == [False] and short.isnan().all()


def test_centres_map_to_each_layers_frames() -> None:
    centres = torch.tensor([[0.5, 6.0, 17.9, float("nan")]])
    assert frames_at(centres, 4, torch.tensor([3])).tolist() == [[0, 1, 2, 0]]  # clamped to the last frame
    assert frames_at(centres, 1, torch.tensor([20])).tolist() == [[0, 6, 17, 0]]
    weights = torch.zeros(1, 3, 5)
    weights[0, 0, 1] = weights[0, 1, 3] = weights[0, 2, 4] = 1.0
    assert attention_centres(weights, torch.tensor([2]), 8)[0, :2].tolist() == [12.0, 28.0]


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    lp = torch.nn.functional.one_hot(torch.tensor([[3, 1, 1, 3, 1, 2, 2, 3]]), 4).float()
    assert ctc_greedy(lp, torch.tensor([8]), blank=3) == [[1, 1, 2]]
    assert ctc_greedy(lp, torch.tensor([4]), blank=3) == [[1]]


def test_beam_of_one_is_greedy_and_decoding_is_capped(model: LAS) -> None:
    b = batch_of(["abc", "de"], [80, 60])
    memory, lens = model.listener(b["features"], b["feature_lengths"])[-1]
    cap = torch.tensor([7, 3])
    g = greedy(model.speller, memory, lens, cap)
    assert g == beam_search(model.speller, memory, lens, cap, beam=1)
    assert all(len(r) <= c for r, c in zip(g, cap.tolist()))
    assert all(len(r) <= c for r, c in zip(beam_search(model.speller, memory, lens, cap, beam=3), cap.tolist()))


def test_a_nan_loss_names_the_fix(model: LAS) -> None:
    b = batch_of(["abc"], [40])
    b["features"][0, 3, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="lower model.lr"):
        model._losses(b, 0.0)


def test_a_run_diverging_to_a_huge_finite_loss_stops() -> None:
    torch.manual_seed(0)
    las = LAS(VOCAB, **{**TINY, "lr": 1e8, "scheduler": "none"})
    batches = [batch_of(["hello world", "abc"], [90, 40], seed=i) for i in range(8)]
    trainer = quiet_trainer(max_steps=8)
    with pytest.raises(
        FloatingPointError, match=r"LAS attention loss is \S+ at step 1 \(diverged: above 34\.7 = 10 × log 32"
    ):
        trainer.fit(las, DataLoader(batches, batch_size=None))


def test_checkpoint_of_another_architecture_is_refused(model: LAS) -> None:
    other = LAS(VOCAB, **{**TINY, "listener_hidden": 32})
    ckpt = {
        "memsig": {"model_class": "memsig.models.las.module.LAS", "vocab": VOCAB.to_dict()},
        "hyper_parameters": dict(model.hparams),
    }
    with pytest.raises(CheckpointError, match="listener_hidden"):
        check_compatible(ckpt, other)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="ctc_layer"):
        LAS(VOCAB, **{**TINY, "ctc_layer": 4})
    with pytest.raises(ValueError, match="alignment=attention"):
        LAS(VOCAB, **{**TINY, "ctc_layer": None})


def test_the_attention_guide_penalises_attention_away_from_its_centres() -> None:
    from memsig.models.las.attention import diagonal_centres, guide_penalty

    s, t = 10, 40
    centres = diagonal_centres(torch.tensor([s]), torch.tensor([t]), s + 3)
    assert centres[0, :s].tolist() == [i * t / s for i in range(s)] and centres[0, s:].isnan().all()
    on = torch.zeros(1, s + 3, t)
    on[0, torch.arange(s), torch.arange(s) * t // s] = 1.0
    on[0, s:] = 1.0 / t  # past the utterance: not guided
    stuck = torch.zeros(1, s + 3, t)
    stuck[0, :, 0] = 1.0
    width = torch.tensor(0.2 * t)
    assert guide_penalty(on, centres, width) < 1e-3
    assert guide_penalty(stuck, centres, width) > 0.4
    assert guide_penalty(stuck, torch.zeros(1, s + 3), torch.tensor(1.0)) == 0  # stuck where it should be


# Two ranks' shares of a dev set: rank 0 holds three utterances in two batches, rank 1 one
EVAL_SHARES = [
    [batch_of(["hello world", "abc"], [90, 40], seed=1), batch_of(["the cat"], [60], seed=2)],
    [batch_of(["a dog"], [50], seed=3)],
]


def _logged_eval_loss(shares: list[list[dict]]) -> float:
    """The val/loss this process's LAS logs after evaluating ``shares`` (those of its rank)."""
    torch.manual_seed(0)
    las = LAS(VOCAB, **TINY).eval()
    logged: dict[str, torch.Tensor] = {}
    las.log = lambda name, value, **_: logged.setdefault(name, value)
    with torch.no_grad():
        for b in shares:
            las._evaluate(b, "val")
    las._log_eval("val")
    return float(logged["val/loss"])


def _rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.save(_logged_eval_loss(EVAL_SHARES[rank]), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_log_the_dev_loss_of_every_utterance(tmp_path) -> None:
    """Under DDP the speech loader deals dev batches round-robin, so ranks hold unequal numbers of
    utterances: the loss each rank logs is the mean over all ranks' utterances, that of one
    process reading them all, not the mean of the ranks' means."""
    mp.spawn(_rank, args=(free_port(), str(tmp_path / "loss")), nprocs=2)
    ranks = [torch.load(tmp_path / f"loss.{r}") for r in range(2)]
    one = _logged_eval_loss(EVAL_SHARES[0] + EVAL_SHARES[1])
    means = [_logged_eval_loss(share) for share in EVAL_SHARES]
    assert abs(sum(means) / 2 - one) > 1e-3  # the shares differ: a mean of means would show
    assert ranks == pytest.approx([one, one], rel=1e-6)
