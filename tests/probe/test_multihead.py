"""The multi-head probe: known memories, frozen models, per-head selection, signatures."""

import numpy as np
import pytest
import torch

import memsig
from memsig.models.char_lm import CharLM
from memsig.models.delay_line import DelayLine
from memsig.probe.heads import BatchedMLPHeads
from memsig.probe.multihead import MultiHeadProbe
from memsig.probe.signature import Signature
from memsig.vocab import Vocab

VOCAB = Vocab()


@pytest.fixture(scope="module")
def delay_signature(random_dm):
    torch.manual_seed(0)
    return memsig.probe(
        DelayLine(VOCAB, 3),
        random_dm,
        lags=[0, 1, 2, 3, 4, 5, 8],
        width=64,
        lr=0.01,
        controls=["shuffled"],
        progress=False,
    )


def test_delay_line_recall_is_exact_up_to_k_and_chance_after(delay_signature):
    sig = delay_signature
    acc = dict(zip(sig.lags, sig.accuracy[sig.index("delay")]))
    chance = sig.majority_rate[0]
    assert all(acc[lag] > 0.97 for lag in (0, 1, 2, 3)), acc
    assert all(abs(acc[lag] - chance[sig.lags.index(lag)]) < 0.03 for lag in (4, 5, 8)), (acc, chance)


def test_shuffled_control_sits_at_chance(delay_signature):
    sig = delay_signature
    shuffled = sig.accuracy[sig.index("shuffled:delay")]
    assert np.all(np.abs(shuffled - sig.majority_rate[0]) < 0.03), shuffled


def test_signature_bookkeeping(delay_signature):
    sig = delay_signature
    assert sig.symbols == VOCAB.labels and sig.states == ["delay", "shuffled:delay"]
    n_test = 8000 // 16 * 16 - 16  # 16 streams; the last symbol of each has no successor window
    support = sig.support.sum(-1)
    assert support[0, sig.lags.index(0)] == n_test
    assert support[0, sig.lags.index(8)] == n_test - 16 * 8  # the first 8 positions of each stream lack lag 8
    lo, hi = sig.recall_ci()
    ok = ~np.isnan(sig.recall)
    assert np.all((lo[ok] <= sig.recall[ok] + 1e-12) & (sig.recall[ok] <= hi[ok] + 1e-12))
    assert np.isnan(sig.recall[..., VOCAB.alphabet.index("#")]).all()  # never occurs: NaN, not 0
    assert sig.info_bits[0, sig.lags.index(1)] > 4.0  # ~log2(26) bits kept at lag 1
    assert abs(sig.info_bits[0, sig.lags.index(8)]) < 0.1


def test_signature_file_round_trips(delay_signature, tmp_path):
    path = delay_signature.save(tmp_path / "sig.npz")
    back = Signature.load(path)
    assert back == delay_signature
    np.testing.assert_array_equal(back.recall, delay_signature.recall)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Signature.load(tmp_path / "none.npz")


def test_batched_heads_equal_separate_mlps():
    torch.manual_seed(0)
    heads = BatchedMLPHeads(num_heads=3, in_dim=5, width=4, hidden_layers=2, num_classes=6).eval()
    x = torch.randn(7, 5)
    out = heads(x)  # [K, C, N]
    for k in range(3):
        w_in = heads.w_in.view(3, 4, 5)[k]
        b_in = heads.b_in.view(3, 4)[k]
        h = torch.relu(x @ w_in.T + b_in)
        h = torch.relu(h @ heads.w_hidden[0][k].T + heads.b_hidden[0][k, :, 0])
        torch.testing.assert_close(out[k].T, h @ heads.w_out[k].T + heads.b_out[k, :, 0])


def test_each_head_keeps_its_own_best_and_it_survives_a_checkpoint():
    heads = BatchedMLPHeads(num_heads=2, in_dim=3, width=4, hidden_layers=1, num_classes=2)
    first = heads.w_out.detach().clone()
    heads.keep_best(torch.tensor([1.0, 1.0]))
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(1.0)
    improved = heads.keep_best(torch.tensor([0.5, 2.0]))  # head 0 improves, head 1 does not
    assert improved.tolist() == [True, False]
    restored = BatchedMLPHeads(num_heads=2, in_dim=3, width=4, hidden_layers=1, num_classes=2)
    restored.load_state_dict(heads.state_dict())
    assert restored.best_loss.tolist() == [0.5, 1.0]
    restored.load_best()
    torch.testing.assert_close(restored.w_out[0], first[0] + 1.0)
    torch.testing.assert_close(restored.w_out[1], first[1])


def test_model_stays_frozen_and_out_of_the_probe(random_dm):
    lm = CharLM(VOCAB, hidden_size=16, embedding_size=8).train()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    probe = MultiHeadProbe(lm, lags=[1, 2], width=8, controls=["random"])
    assert not any(k.startswith(("_source", "source")) for k in probe.state_dict())
    assert sum(p.numel() for p in probe.parameters()) == sum(p.numel() for p in probe.heads.parameters())
    memsig.probe(lm, random_dm, lags=[1, 2], width=8, controls=["random"], max_steps=50, progress=False)
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    assert probe.widths == {"layer1.c": 8}


def test_auto_width_follows_the_papers_rule():
    lm = CharLM(VOCAB, hidden_size=320, embedding_size=64)
    probe = MultiHeadProbe(lm, lags=[1], width="auto", max_width=None)
    kernel = lm.kernel_params("layer1.c")
    w = probe.widths["layer1.c"]
    assert w * (320 + 31) >= kernel > (w - 1) * (320 + 31)
    assert MultiHeadProbe(lm, lags=[1], width="auto", max_width=256).widths["layer1.c"] == 256


def test_bad_probe_settings_are_named():
    lm = CharLM(VOCAB, hidden_size=8, embedding_size=4)
    with pytest.raises(ValueError, match="'layer3.c' is not exposed"):
        MultiHeadProbe(lm, states=["layer3.c"])
    with pytest.raises(ValueError, match="controls"):
        MultiHeadProbe(lm, controls=["permuted"])


def test_trained_lm_recall_falls_with_lag(trained_lm, tmp_path):
    sig = memsig.probe(
        trained_lm["result"]["best_checkpoint"],
        _tiny_dm(trained_lm),
        lags=[1, 2, 4, 8, 16],
        width=64,
        controls=[],
        eval_every=25,
        patience=3,
        anneals=1,
        progress=False,
    )
    acc = sig.accuracy[sig.index("layer1.c")]
    assert acc[0] > acc[2] > acc[4], acc
    assert acc[0] > 0.6 and acc[-1] < acc[0] - 0.2
    assert sig.forward_recall is not None and np.nanmean(sig.forward_recall) > 0.2


def _tiny_dm(trained_lm):
    import hydra

    cfg = trained_lm["cfg"]
    return hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))


def test_bigram_targets_use_the_same_machinery(random_dm):
    """The bigram ending at t-δ is in a k=3 delay line for δ <= 2 and not for δ = 4."""
    sig = memsig.probe(
        DelayLine(VOCAB, 3),
        random_dm,
        lags=[1, 2, 4],
        target="bigram",
        width=128,
        lr=0.03,
        controls=[],
        eval_every=25,
        patience=3,
        anneals=1,
        progress=False,
    )
    assert len(sig.symbols) == 31 * 31 and sig.symbols[VOCAB.alphabet.index("a") * 31 + 1] == "aa"
    acc = sig.accuracy[0]
    assert acc[0] > 0.5 and acc[2] < 0.05, acc
