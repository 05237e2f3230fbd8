import hashlib
from pathlib import Path

import pytest

from memsig.data.corpora import PTBCorpus, ShakespeareWorks, TextCorpus, split_segments
from memsig.data.io import CorpusError, ensure_file
from memsig.resolvers import data_dir

SEGS = [f"line {i}" for i in range(1000)]


def test_tail_split_is_contiguous():
    s = split_segments(SEGS, dev=0.1, test=0.05, method="tail")
    assert s.train + s.dev + s.test == SEGS
    assert (len(s.train), len(s.dev), len(s.test)) == (850, 100, 50)


def test_block_split_is_seeded_and_a_partition():
    a = split_segments(SEGS, dev=0.1, test=0.1, method="blocks", block=50, seed=3)
    b = split_segments(SEGS, dev=0.1, test=0.1, method="blocks", block=50, seed=3)
    c = split_segments(SEGS, dev=0.1, test=0.1, method="blocks", block=50, seed=4)
    assert a == b and a != c
    assert sorted(a.train + a.dev + a.test) == sorted(SEGS)
    assert len(a.dev) == len(a.test) == 100
    assert a.dev == sorted(a.dev, key=SEGS.index)  # corpus order kept inside a split


def test_text_corpus_file_and_folder(tmp_path: Path):
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    (tmp_path / "b.txt").write_text("three\nfour\n")
    (tmp_path / "skip.md").write_text("not me\n")
    s = TextCorpus(str(tmp_path), dev=0.25, test=0.25).load()
    assert s.train + s.dev + s.test == ["one", "two", "three", "four"]
    assert TextCorpus(str(tmp_path / "b.txt"), dev=0.0, test=0.5).load().test == ["four"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"ok\n\xff\xfe bad", "not valid UTF-8.*line 2"),
    ],
)
def test_bad_corpus_files_name_the_file(tmp_path: Path, content, match):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=match) as err:
        TextCorpus(str(path)).load()
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "match", "iconv"),
    [
        (bytes(range(256)) * 8, r"looks binary, not text \(NUL bytes near its start: b'\\x00\\x01", None),
        ("Ünïcödé text\n".encode("utf-16"), "is UTF-16 text, not UTF-8", "iconv -f utf-16 -t utf-8"),
        ("café crème\n".encode("latin1"), "is not valid UTF-8", "iconv -f latin1 -t utf-8"),
    ],
)
def test_a_file_that_is_not_utf8_text_gets_the_right_advice(tmp_path: Path, content: bytes, match, iconv):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=match) as err:
        TextCorpus(str(path)).load()
    assert (iconv in str(err.value)) if iconv else ("iconv" not in str(err.value))


def test_empty_folder_is_an_error(tmp_path: Path):
    with pytest.raises(CorpusError, match="no files matching"):
        TextCorpus(str(tmp_path)).load()


def test_download_verifies_checksum(tmp_path: Path):
    src = tmp_path / "remote.txt"
    src.write_text("hello\nworld\n")
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(CorpusError, match="expected"):
        ensure_file(tmp_path / "bad.txt", src.as_uri(), "0" * 64)
    assert not (tmp_path / "bad.txt").exists()  # nothing half-written
    got = ensure_file(tmp_path / "sub" / "ok.txt", src.as_uri(), good)
    assert got.read_text() == "hello\nworld\n"
    with pytest.raises(CorpusError, match="downloading it from .* failed"):
        ensure_file(tmp_path / "gone.txt", (tmp_path / "nowhere.txt").as_uri())


def test_ptb_normalisation():
    c = PTBCorpus(root="unused")
    line = " the company 's shares fell N N to $ N <unk> and they do n't care "
    assert c.normalize_line(line) == "the company's shares fell # # to $ # and they don't care"
    assert PTBCorpus(root="x", unk="~").normalize_line("a <unk> b") == "a ~ b"


def test_ptb_official_splits():
    s = PTBCorpus(root=str(data_dir() / "ptb")).load()
    # 42068 / 3370 / 3761 lines; those holding nothing but <unk> are empty once it is dropped
    assert (len(s.train), len(s.dev), len(s.test)) == (42012, 3369, 3757)
    assert not any("<unk>" in x for x in s.dev)
    assert any("'s " in x for x in s.dev) and not any(" 's " in x for x in s.dev)


def test_shakespeare_complete_works():
    s = ShakespeareWorks(path=str(data_dir() / "shakespeare" / "okfn_shakespeare_gutenberg_texts.tar.gz")).load()
    total = len(s.train) + len(s.dev) + len(s.test)
    assert total > 100_000
    assert 0.04 < len(s.dev) / total < 0.06 and 0.04 < len(s.test) / total < 0.06


@pytest.mark.parametrize("method", ["tail", "blocks"])
def test_few_long_segments_are_split_by_characters(method: str):
    segs = [f"{chr(97 + i)}" * 5000 for i in range(8)]  # 8 blocks' worth of text in one block of lines
    s = split_segments(segs, dev=0.05, test=0.1, method=method)
    assert [sum(map(len, x)) for x in (s.train, s.dev, s.test)] == [34000, 2000, 4000]
    if method == "tail":
        assert "".join(s.train + s.dev + s.test) == "".join(segs)
    assert s == split_segments(segs, dev=0.05, test=0.1, method=method)
