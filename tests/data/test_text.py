import logging
import math
import re
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from memsig.data.corpora import Corpus, Splits, TextCorpus
from memsig.data.io import CorpusError
from memsig.data.text import SPLITS, SegmentBatches, StreamBatches, TextDataModule, unigram_entropy
from memsig.vocab import Vocab

from conftest import compose_cfg


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


def test_segment_training_batches_are_shared_equally_between_ranks():
    """DDP steps every rank together: a rank with one batch more would wait for the others forever."""
    segs = [torch.arange(n + 2) for n in range(5)]  # 3 batches of 2

    def counts(equal_share: bool) -> list[int]:
        return [len(SegmentBatches(segs, 2, r, 2, equal_share=equal_share)) for r in range(2)]

    assert counts(False) == [2, 1] and counts(True) == [1, 1]


def test_fraction_is_a_seeded_ordered_subset():
    train = [f"segment {chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(200)]

    def subset(seed):
        dm = TextDataModule(ListCorpus(train), Vocab(), batch_size=2, fraction=0.05, fraction_seed=seed)
        dm.setup()
        return [dm.vocab.decode(s) for s in dm.segments["train"]]

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


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("batch_size", 0, "data.batch_size must be a positive integer; got 0"),
        ("batch_size", -4, "data.batch_size must be a positive integer; got -4"),
        ("seq_len", 0, "data.seq_len must be a positive integer; got 0"),
        ("eval_batch_size", 0, "data.eval_batch_size must be a positive integer or null; got 0"),
        ("max_chars", 0, "data.max_chars must be a positive integer or null; got 0"),
    ],
)
def test_sizes_must_be_positive(setting: str, value: int, match: str):
    with pytest.raises(ValueError, match=match):
        TextDataModule(ListCorpus(["some text"]), Vocab(), **{setting: value})


def text_file(path: Path, lines: int, length: int) -> Path:
    """``lines`` lines of ``length`` random lowercase letters and spaces."""
    chars = np.array(list("abcdefghijklmnopqrstuvwxyz     "))
    rows = np.random.default_rng(0).choice(chars, (lines, length))
    path.write_text("\n".join("".join(row).strip() for row in rows) + "\n", encoding="utf-8")
    return path


def data_config(tmp_path: Path, *overrides: str) -> TextDataModule:
    """The datamodule of ``data=text`` with ``overrides``, as train.py builds it."""
    cfg = compose_cfg(["data=text", *overrides], tmp_path / "run")
    return hydra.utils.instantiate(cfg.data, vocab=hydra.utils.instantiate(cfg.vocab))


@pytest.mark.parametrize(("lines", "length"), [(500, 2180), (12, 60)])  # a 1.09 MB file of long lines; a short one
def test_a_file_of_few_or_long_lines_gives_every_split_its_share(tmp_path: Path, lines: int, length: int):
    path = text_file(tmp_path / "corpus.txt", lines, length)

    def symbols(*overrides: str) -> dict[str, int]:
        dm = data_config(tmp_path, f"data.corpus.path={path}", *overrides)
        dm.setup()
        return {s: len(dm.ids(s)) for s in SPLITS}

    sizes = symbols()
    total = sum(sizes.values())
    assert total > 0.95 * lines * length
    for split, share in (("train", 0.9), ("dev", 0.05), ("test", 0.05)):
        assert sizes[split] / total == pytest.approx(share, rel=0.2), (split, sizes)
    assert symbols() == sizes  # deterministic
    assert symbols("data.corpus.method=tail") != sizes  # dev and test at the end instead of scattered blocks


def test_an_empty_split_names_the_split_not_the_vocab(tmp_path: Path):
    path = text_file(tmp_path / "corpus.txt", 500, 80)
    dm = data_config(tmp_path, f"data.corpus.path={path}", "data.corpus.dev=0")
    with pytest.raises(
        CorpusError,
        match=r"^the dev split of corpus 'corpus' is empty: .* train/dev/test \d+/0/\d+ segments, \d+/0/\d+ char",
    ) as err:
        dm.setup()
    assert "data.corpus.dev" in str(err.value) and "vocab" not in str(err.value)


def test_text_mostly_outside_the_symbol_set_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    mixed = ["我们今天去公园散步然后吃饭" * 19 + " and some tea"] * 100  # 95% of the characters are Chinese
    dm = TextDataModule(ListCorpus(mixed, mixed[:10], mixed[:10]), Vocab(), batch_size=2)
    with caplog.at_level(logging.INFO, logger="memsig.data.text"):
        dm.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert re.search(r"of \d+ characters \(95\.0%\) are outside the symbol set and dropped", warnings[0])
    assert "vocab.extra_symbols" in warnings[0] and "'我' 2280" in warnings[0]


def test_a_few_characters_outside_the_symbol_set_are_an_info_line(caplog: pytest.LogCaptureFixture):
    dm = TextDataModule(ListCorpus(["plain text with one ü"] * 20), Vocab(), batch_size=2)
    with caplog.at_level(logging.INFO, logger="memsig.data.text"):
        dm.setup()
    outside = [r for r in caplog.records if "outside the symbol set" in r.getMessage()]
    assert [r.levelno for r in outside] == [logging.INFO] and "'ü' 20" in outside[0].getMessage()
