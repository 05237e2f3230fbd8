"""Penn Treebank sentences as text a speech synthesiser can read aloud, and its transcript.

The treebank's LM text (Mikolov's ``ptb.*.txt``) is lowercase, has every number replaced by
``N``, rare words replaced by ``<unk>``, clitics split (``did n't``) and abbreviations kept
with their periods (``mr.``, ``u.s.``). :func:`ptb_sentence_for_speech` turns one line into
plain words over ``a``-``z``, space and apostrophe only, so that the text spoken is exactly
the transcript and survives :class:`~memsig.vocab.Vocab` normalisation unchanged:

- ``N`` becomes the words of a random number (:func:`random_number`), a day (1-31) right
  after a month name; ``N N`` is the treebank's ``N %`` and becomes ``... percent``;
  ``$ N [million|billion|trillion]`` becomes ``... [million] dollars`` (likewise ``#`` pounds
  and the ``c$``/``a$``/``hk$`` dollars);
- clitics are re-attached as :class:`~memsig.data.corpora.PTBCorpus` does (``didn't``), and a
  lone possessive apostrophe joins its plural (``investors '`` -> ``investors'``);
- hyphens become spaces, ``&`` becomes ``and``, and common abbreviations are written out
  (``mr.`` -> ``mister``, ``u.s.`` -> ``united states``, ``oct.`` -> ``october``; see
  :data:`ABBREVIATIONS`), also as the last token, where the treebank dropped the period
  (``inc``, ``u.s``), unless the stem is a word too (``no``, ``mass``);
- a line with ``<unk>`` or any token left over (digits, initials such as ``j.``, other
  abbreviations, ``s&p``, ``1980s``) is dropped (``None``): no sentence is spoken differently
  from its transcript.
"""

from __future__ import annotations

import re

import numpy as np

from memsig.data.corpora import reattach_ptb_clitics

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
MAX_NUMBER = 10**12 - 1

#: Abbreviations of the treebank written out in full (spoken and transcribed as the words).
ABBREVIATIONS: dict[str, str] = {
    "mr.": "mister", "mrs.": "missus", "ms.": "miz", "dr.": "doctor", "jr.": "junior",
    "sen.": "senator", "rep.": "representative", "gov.": "governor", "gen.": "general",
    "corp.": "corporation", "inc.": "incorporated", "co.": "company", "cos.": "companies",
    "ltd.": "limited", "bros.": "brothers", "no.": "number", "vs.": "versus",
    "jan.": "january", "feb.": "february", "mar.": "march", "apr.": "april", "aug.": "august",
    "sept.": "september", "oct.": "october", "nov.": "november", "dec.": "december",
    "ala.": "alabama", "ariz.": "arizona", "calif.": "california", "colo.": "colorado",
    "conn.": "connecticut", "del.": "delaware", "fla.": "florida", "ga.": "georgia",
    "ill.": "illinois", "ind.": "indiana", "kan.": "kansas", "ky.": "kentucky",
    "mass.": "massachusetts", "md.": "maryland", "mich.": "michigan", "minn.": "minnesota",
    "mo.": "missouri", "neb.": "nebraska", "nev.": "nevada", "okla.": "oklahoma",
    "ore.": "oregon", "pa.": "pennsylvania", "tenn.": "tennessee", "tex.": "texas",
    "va.": "virginia", "wash.": "washington", "wis.": "wisconsin",
    "n.j.": "new jersey", "n.y.": "new york", "n.c.": "north carolina",
    "u.s.": "united states", "u.s.a.": "united states of america", "u.s.a": "united states of america",
    "u.k.": "united kingdom", "u.n.": "united nations", "u.s.s.r.": "soviet union",
}  # fmt: skip

#: Currency symbols of the treebank: (singular, plural) unit spoken after the amount.
CURRENCIES: dict[str, tuple[str, str]] = {
    "$": ("dollar", "dollars"),
    "#": ("pound", "pounds"),
    "c$": ("canadian dollar", "canadian dollars"),
    "a$": ("australian dollar", "australian dollars"),
    "hk$": ("hong kong dollar", "hong kong dollars"),
}
_MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)
# Abbreviation stems that are also words: a sentence ending in one keeps the word.
_STEMS_THAT_ARE_WORDS = frozenset(
    ["no", "mass", "ill", "wash", "ore", "mar", "dec", "gen", "rep", "del", "ind", "mo", "sen", "gov"]
)
_AMOUNT_SCALES = frozenset({"million", "billion", "trillion"})
_WORD = r"[a-z]+(?:'[a-z]+)*'?"
_PLAIN_TOKEN = re.compile(r"'?" + _WORD)  # a word, or a split clitic such as 's / n't
_SPEAKABLE = re.compile(rf"{_WORD}(?: {_WORD})*")
_LONE_POSSESSIVE = re.compile(r"(?<=s) '(?= |$)")


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest:
        words.append(_ONES[rest])
    return words


def number_words(n: int) -> str:
    """The English cardinal of ``n`` as space-separated words, without "and" or hyphens.

    Every number is read as a cardinal (years too): ``45`` -> ``"forty five"``, ``100`` ->
    ``"one hundred"``, ``1987`` -> ``"one thousand nine hundred eighty seven"``,
    ``1000000`` -> ``"one million"``. Defined for ``0 <= n <= 999_999_999_999``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"number_words needs an int, got {type(n).__name__}")
    n = int(n)
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_words covers 0..{MAX_NUMBER}, got {n}")
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words += _below_thousand(count) + [name]
    return " ".join(words + _below_thousand(n))


def random_number(rng: np.random.Generator) -> int:
    """A number to stand for a treebank ``N``: 1 to 4 digits (probabilities .3/.4/.2/.1), uniform
    among the numbers of that many digits (0-9 for one digit)."""
    digits = int(rng.choice(4, p=[0.3, 0.4, 0.2, 0.1])) + 1
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(low, 10**digits))


def _spoken_token(token: str) -> str | None:
    """A non-number token as words (hyphen parts one by one), or None when it is not speakable."""
    if token == "&":
        return "and"
    if token == "'":  # a plural possessive, joined to its word once the clitics are
        return token
    parts = []
    for part in token.split("-"):
        spoken = ABBREVIATIONS.get(part, part if _PLAIN_TOKEN.fullmatch(part) else None)
        if spoken is None:
            return None
        parts.append(spoken)
    return " ".join(parts)


def ptb_sentence_for_speech(line: str, rng: np.random.Generator) -> str | None:
    """One treebank line as the text to speak (= its transcript), or None when it is dropped.

    Drawn numbers come from ``rng`` in token order, so a seeded generator gives the same text
    every time. See the module docstring for the rules; the result matches
    ``[a-z]+('[a-z]+)*'?`` words separated by single spaces.
    """
    tokens = line.split()
    if not tokens or "<unk>" in tokens:
        return None
    words: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in CURRENCIES:
            if i + 1 >= len(tokens) or tokens[i + 1] != "N":
                return None
            value = random_number(rng)
            words.append(number_words(value))
            i += 2
            scaled = i < len(tokens) and tokens[i] in _AMOUNT_SCALES
            if scaled:
                words.append(tokens[i])
                i += 1
            if i < len(tokens) and tokens[i] == "N":  # "$ N N": a fraction or percentage, unclear
                return None
            singular, plural = CURRENCIES[token]
            words.append(singular if value == 1 and not scaled else plural)
        elif token == "N" and words and words[-1] in _MONTHS:  # a date: "oct. N" is a day
            words.append(number_words(int(rng.integers(1, 32))))
            i += 1
        elif token == "N":
            words.append(number_words(random_number(rng)))
            i += 1
            if i < len(tokens) and tokens[i] == "N":  # the treebank's "N %"
                words.append("percent")
                i += 1
        else:
            if i == len(tokens) - 1 and token + "." in ABBREVIATIONS and token not in _STEMS_THAT_ARE_WORDS:
                token += "."  # the treebank drops a sentence's final period
            spoken = _spoken_token(token)
            if spoken is None:
                return None
            words.append(spoken)
            i += 1
    text = _LONE_POSSESSIVE.sub("'", reattach_ptb_clitics(" ".join(words)))
    return text if _SPEAKABLE.fullmatch(text) else None
