import pytest

from memsig.vocab import DEFAULT_SYMBOLS, Vocab, VocabMismatchError


def test_default_symbol_set_is_the_references():
    v = Vocab()
    assert len(v) == 31
    assert v.alphabet == DEFAULT_SYMBOLS
    assert v.labels[0] == "\u2423"  # space shown visibly


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("First Citizen:", "first citizen,"),
        ("In 1989, 42 shares!", "in ####, ## shares."),
        ("What?  Nay--peace; go", "what. nay peace, go"),
        ("don\u2019t (ever) [stop]", "don't ever stop"),
        ("  tabs\tand   spaces  ", "tabs and spaces"),
    ],
)
def test_normalize_default(raw, expected):
    assert Vocab().normalize(raw) == expected


def test_oov_policies():
    assert Vocab(oov="drop").normalize("a(b)c") == "abc"
    assert Vocab(oov="space").normalize("a(b)c") == "a b c"
    unk = Vocab(oov="unk")
    assert unk.normalize("a(b)c") == "a~b~c"
    assert len(unk) == 32 and unk.alphabet.endswith("~")


def test_extra_symbols_and_case():
    v = Vocab(extra_symbols="!?", char_map={})
    assert v.normalize("Hi! Ok?") == "hi! ok?"
    assert Vocab(symbols=DEFAULT_SYMBOLS + "ABC", lowercase=False, char_map={}).normalize("AbC") == "AbC"


def test_encode_decode_roundtrip_and_unknown_symbol_error():
    v = Vocab()
    text = v.normalize("To be, or not to be: that is the question.")
    assert v.decode(v.encode(text)) == text
    with pytest.raises(ValueError, match="not in the symbol set"):
        v.encode("A")


def test_dict_roundtrip_and_mismatch_message():
    v = Vocab(oov="space")
    assert Vocab.from_dict(v.to_dict()) == v
    with pytest.raises(VocabMismatchError, match=r"oov: 'drop' \(in checkpoint\) vs 'space' \(here\)"):
        v.check_same(Vocab(), what="checkpoint")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"oov": "keep"}, "oov must be one of"),
        ({"symbols": "aab"}, "unique"),
        ({"digit_symbol": "%"}, "digit_symbol"),
        ({"char_map": {"x": "ab"}}, "single characters"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Vocab(**kwargs)
