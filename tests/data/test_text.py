import math

import pytest
import torch

from memsig.data.corpora import Corpus, Splits, TextCorpus
from memsig.data.io import CorpusError
from memsig.data.text import SegmentBatches, StreamBatches, TextDataModule, unigram_entropy
from memsig.vocab import Vocab


class ListCorpus(Corpus):
    name = "list"

    def __init__(self, train, dev=("dev text here",), test=("test text here",)):
        self.splits = Splits(list(train), list(dev), list(test))

    def load(self) -> Splits:
        return self.splits


def test_stream_windows_are_consecutive_and_targets_shifted():
    ids = torch.arange(1000) % 31
    ds = StreamBatches(ids, batch_size=4, seq_len=32)
    streams = ids[:1000].view(4, 250)
    assert len(ds) == math.ceil(249 / 32)
    rebuilt = torch.cat([ds[i]["inputs"] for i in range(len(ds))], dim=1)
    assert torch.equal(rebuilt, streams[:, :249])
    for i in range(len(ds)):
        b = ds[i]
        assert torch.equal(b["targets"], streams[:, i * 32 + 1 : i * 32 + 1 + b["inputs"].shape[1]])
        assert b["carry"] == (i > 0)
        assert b["history"][0, 0] == i * 32 and b["mask"].all()


def test_stream_ranks_get_disjoint_streams():
    ids = torch.arange(800)
    parts = [StreamBatches(ids, 2, 10, rank=r, world_size=2)[0]["inputs"][:, 0] for r in range(2)]
    assert torch.equal(torch.cat(parts), torch.tensor([0, 200, 400, 600]))


def test_stream_too_short_is_an_error():
    with pytest.raises(CorpusError, match="too short"):
        StreamBatches(torch.arange(10), batch_size=8, seq_len=4)


def test_segment_batches_pad_and_mask():
    segs = [torch.tensor(s) for s in ([1, 2, 3], [4, 5], [6], [7, 8, 9, 10])]
    ds = SegmentBatches(segs, batch_size=2)
    batches = [ds[i] for i in range(len(ds))]
    assert [b["inputs"].shape for b in batches] == [(2, 2), (1, 3)]  # [6] skipped, bucketed by length
    first = batches[0]
    assert first["inputs"].tolist() == [[4, 0], [1, 2]] and first["targets"].tolist() == [[5, 0], [2, 3]]
    assert first["mask"].tolist() == [[True, False], [True, True]]
    assert first["history"].tolist() == [[0, 1], [0, 1]] and first["carry"] is False


def test_fraction_is_a_seeded_ordered_subset():
    train = [f"segment {chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(200)]

    def subset(seed):
        dm = TextDataModule(ListCorpus(train), Vocab(), batch_size=2, fraction=0.05, fraction_seed=seed)
        dm.setup()
        return dm.segments["train"]

    a, b, c = subset(0), subset(0), subset(1)
    assert a == b != c and len(a) == 10
    assert a == sorted(a, key=train.index)


def test_datamodule_normalises_joins_and_limits(tiny_corpus):
    dm = TextDataModule(TextCorpus(str(tiny_corpus), name="tiny"), Vocab(), batch_size=4, seq_len=16, max_chars=5000)
    dm.setup()
    ids = dm.ids("train")
    assert 4900 < len(ids) < 5100
    text = dm.vocab.decode(ids)
    assert text.startswith("first citizen, before we proceed any further, hear me speak.")
    assert dm.vocab.decode(ids) == Vocab().decode(ids)  # deterministic
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (4, 16) and batch["inputs"].dtype == torch.long


def test_empty_split_after_normalisation_is_an_error():
    dm = TextDataModule(ListCorpus(["@@@", "(((("]), Vocab(), batch_size=1)
    with pytest.raises(CorpusError, match="train split .* no text after normalisation"):
        dm.setup()


def test_unigram_entropy():
    assert unigram_entropy(torch.tensor([0, 1, 2, 3]), 31) == pytest.approx(math.log(4))
    assert unigram_entropy(torch.zeros(10, dtype=torch.long), 31) == 0.0
