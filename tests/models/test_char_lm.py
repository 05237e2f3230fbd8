import re

import pytest
import torch
from torch import nn

from memsig.data.corpora import TextCorpus
from memsig.data.text import TextDataModule
from memsig.models.char_lm import CharLM
from memsig.models.char_rnn import lstm_cell_states
from memsig.models.checkpoint import CheckpointError, check_compatible, load_model, load_weights
from memsig.states import StateBatch, StateSource
from memsig.vocab import Vocab, VocabMismatchError

from conftest import lm_batch as batch
from conftest import quiet_trainer


def make(cell="lstm", layers=2, **kw) -> CharLM:
    torch.manual_seed(0)
    return CharLM(Vocab(), cell=cell, num_layers=layers, hidden_size=24, embedding_size=8, **kw)


def test_cell_states_match_a_step_by_step_lstm_cell():
    torch.manual_seed(1)
    lstm = nn.LSTM(7, 12, batch_first=True)
    cell = nn.LSTMCell(7, 12)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in lstm.state_dict().items()})
    x, h0, c0 = torch.randn(3, 50, 7), torch.randn(3, 12), torch.randn(3, 12)
    h, _ = lstm(x, (h0[None], c0[None]))
    c = lstm_cell_states(lstm, x, h, h0, c0)
    hs, cs = h0, c0
    for t in range(50):
        hs, cs = cell(x[:, t], (hs, cs))
        torch.testing.assert_close(c[:, t], cs, atol=1e-5, rtol=0)
        torch.testing.assert_close(h[:, t], hs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_states_interface(cell):
    lm = make(cell, layers=3).train()
    inputs = torch.randint(0, 31, (4, 20))
    sb = lm.states(batch(inputs))
    assert isinstance(lm, StateSource) and isinstance(sb, StateBatch)
    names = [f"layer{i}.{k}" for i in (1, 2, 3) for k in (["c", "h"] if cell == "lstm" else ["h"])]
    assert list(sb.states) == lm.state_names == names
    assert all(s.shape == (4, 20, 24) and not s.requires_grad for s in sb.states.values())
    assert torch.equal(sb.symbols, inputs)
    assert lm.training  # mode restored
    # the top layer's h is what the projection reads
    logits, _, _ = lm.eval()(inputs)
    torch.testing.assert_close(lm.net.projection(sb.states["layer3.h"]), logits)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carried_states_equal_one_long_window(cell):
    """The stream regime: two consecutive windows with carry give the states of one window."""
    lm = make(cell).eval()
    inputs = torch.randint(0, 31, (2, 30))
    whole = lm.states(batch(inputs))
    first = lm.states(batch(inputs[:, :12]))
    second = lm.states(batch(inputs[:, 12:], carry=True, start=12))
    for name in lm.state_names:
        torch.testing.assert_close(torch.cat([first.states[name], second.states[name]], 1), whole.states[name])
    fresh = lm.states(batch(inputs[:, 12:], carry=False))
    assert not torch.allclose(fresh.states["layer2.h"], whole.states["layer2.h"][:, 12:])


def test_weight_drop_only_in_training():
    lm = make(dropout_recurrent=0.5)
    x = torch.randint(0, 31, (2, 10))
    lm.eval()
    torch.testing.assert_close(lm(x)[0], lm(x)[0])
    lm.train()
    assert not torch.allclose(lm(x)[0], lm(x)[0])
    assert lm.net.layers[0].weight_hh_l0.abs().min() > 0  # parameters untouched


def test_nan_loss_names_the_problem():
    lm = make()
    with torch.no_grad():
        lm.net.projection.bias.fill_(float("nan"))
    lm.log = lambda *a, **k: None  # no trainer attached
    with pytest.raises(FloatingPointError, match="lower model.lr"):
        lm.training_step(batch(torch.randint(0, 31, (2, 8))), 0)


def test_a_run_diverging_to_a_huge_finite_loss_stops(tiny_corpus, one_thread):
    dm = TextDataModule(TextCorpus(str(tiny_corpus)), Vocab(), batch_size=4, seq_len=32, max_chars=20000)
    lm = make(layers=1, lr=1e30, scheduler="none")
    trainer = quiet_trainer(max_steps=50, limit_val_batches=0)
    with pytest.raises(
        FloatingPointError, match=r"training loss is \S+e\+\d+ at step 1 \(diverged: above 34\.3 = 10 × log 31"
    ):
        trainer.fit(lm, datamodule=dm)


def test_a_step_with_overflowing_gradients_is_skipped_and_too_many_in_a_row_raise():
    lm = make()
    opt = torch.optim.AdamW(lm.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}

    def step(overflow: bool) -> None:
        opt.zero_grad()
        logits = lm(torch.randint(0, 31, (2, 8)))[0]
        logits.square().mean().backward()
        if overflow:
            lm.net.layers[0].weight_hh_l0.grad[0, 0] = float("inf")
        lm.on_before_optimizer_step(opt)
        opt.step()

    step(overflow=True)
    assert lm.skipped_steps == 1
    for n, p in lm.named_parameters():  # nothing moved, not even by weight decay
        torch.testing.assert_close(p, before[n], rtol=0, atol=0)
    step(overflow=False)
    assert lm.skipped_steps == 1 and not torch.equal(lm.net.projection.weight, before["net.projection.weight"])
    for _ in range(9):
        step(overflow=True)
    with pytest.raises(FloatingPointError, match="10 steps in a row"):
        step(overflow=True)


def _checkpoint(lm: CharLM) -> dict:
    ckpt = {"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams)}
    lm.on_save_checkpoint(ckpt)
    return ckpt


def test_checkpoint_checks(tmp_path):
    lstm = make()
    ckpt = _checkpoint(lstm)
    check_compatible(ckpt, make())
    with pytest.raises(CheckpointError, match="cell='lstm' \\(checkpoint\\) vs 'gru'"):
        check_compatible(ckpt, make("gru"))
    other_vocab = CharLM(Vocab(oov="unk"), num_layers=2, hidden_size=24, embedding_size=8)
    with pytest.raises(VocabMismatchError, match="another symbol set"):
        check_compatible(ckpt, other_vocab)
    foreign = {"state_dict": {}, "memsig": {"model_class": "memsig.models.las.LAS", "vocab": Vocab().to_dict()}}
    with pytest.raises(CheckpointError, match="holds a memsig.models.las.LAS"):
        check_compatible(foreign, lstm)
    with pytest.raises(CheckpointError, match="not written by a memsig model"):
        check_compatible({"state_dict": {}}, lstm)
    torch.save(ckpt, tmp_path / "m.ckpt")
    loaded = load_model(tmp_path / "m.ckpt", expected=CharLM)
    x = torch.randint(0, 31, (2, 9))
    torch.testing.assert_close(loaded(x)[0], lstm.eval()(x)[0], rtol=0, atol=0)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(tmp_path / "junk.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")


def test_a_vocab_mismatch_names_the_checkpoint_once(tmp_path):
    ckpt = _checkpoint(make())
    other_vocab = CharLM(Vocab(oov="unk"), num_layers=2, hidden_size=24, embedding_size=8)
    with pytest.raises(VocabMismatchError, match="^the checkpoint was made with another symbol set; oov: 'drop'"):
        check_compatible(ckpt, other_vocab)
    torch.save(ckpt, tmp_path / "m.ckpt")
    with pytest.raises(VocabMismatchError, match=f"^the checkpoint {tmp_path / 'm.ckpt'} was made with another"):
        load_weights(other_vocab, tmp_path / "m.ckpt")


@pytest.mark.parametrize("content", [b"epoch 3, val loss 1.2\n", bytes([7, 200, 13, 0]) * 500])
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content: bytes):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    expected = f"checkpoint {path} cannot be read: it is not a PyTorch checkpoint (it starts with {content[:4]!r})"
    with pytest.raises(CheckpointError, match="^" + re.escape(expected) + "; pass a .ckpt file from a train run$"):
        load_model(path)


def test_a_damaged_checkpoint_says_so_without_torchs_advice(tmp_path):
    path = tmp_path / "cut.ckpt"
    torch.save(_checkpoint(make()), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(
        CheckpointError, match=r"cannot be read \(RuntimeError: PytorchStreamReader.*\): it is damaged"
    ) as err:
        load_model(path)
    assert "weights_only" not in str(err.value) and "internal miniz error" not in str(err.value)
