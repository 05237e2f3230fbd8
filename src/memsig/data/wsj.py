"""The LDC Wall Street Journal speech corpora (WSJ0 LDC93S6A/B, WSJ1 LDC94S13A/B) as text.

For users who hold the discs: only the transcripts are read, one segment per utterance.

Layout. Transcripts are ``*.dot`` files (any case of the extension) anywhere below
``root``, however the discs were unpacked, e.g.
``<root>/11-4.1/wsj0/transcrp/dots/si_tr_s/01a/01ac0100.dot`` or
``<root>/wsj0/si_tr_s/01a/01aa0100.dot``. A file belongs to a split when one of the
split's subset folder names is among its path components below ``root`` (compared
case-insensitively); files in other subsets are ignored. Each line of a file is
``TRANSCRIPT TEXT (UTTID)``. An utterance found in several files (copies on several
discs) is kept once, from the first file in path order.

Splits (the usual ASR/LM setup; folder names are constructor arguments):

=========  ===========================================  =================
``train``  SI-284: wsj0 ``si_tr_s`` + wsj1 ``si_tr_s``  ``train_subsets``
``dev``    dev93: wsj1 ``si_dt_20``                     ``dev_subsets``
``test``   eval92: wsj0 ``si_et_05``                    ``test_subsets``
=========  ===========================================  =================

Each split is in utterance-id order; utterances left empty by cleaning are skipped.

Markup (:func:`normalize_dot`): noise/event markers ``[loud_breath]``, ``[<door_slam]``,
``[door_slam>]``, ``[/door_slam]`` are removed; verbal deletions ``<WORD>``,
mispronunciations ``*WORD*``, lengthening ``A:ND`` and truncation ``~`` keep the word
without the mark; escapes ``AT\\&T`` lose the backslash. Verbalised punctuation
``<punct chars or \\><NAME>`` (``\\COMMA``, ``,COMMA``, ``\\,COMMA``, ``?QUESTION-MARK``...)
becomes its character, attached to the previous word (``-HYPHEN`` joins both neighbours,
``--DASH`` is a free-standing ``-``); quote, paren, brace and bracket names become
nothing. Spoken symbols (``%PERCENT``, ``.POINT``) keep the word; the plain words
``COLON``, ``POINT``... are never touched. ``.`` inside words (``U.S.``, ``MR.``) and
fragments (``EX-``) stay; tokens with no letter or digit left (a lone ``.``) are dropped.
Case is left as is (the :class:`~memsig.vocab.Vocab` folds it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from memsig.data.corpora import Corpus, Splits
from memsig.data.io import CorpusError, matched_lines

# Verbalised punctuation (``,COMMA``, ``\,COMMA``, ``\COMMA``, ``--DASH``...): name -> text.
# Quotes, parens, braces and brackets become nothing: the transcripts do not mark them
# consistently as opening or closing, and the default symbol set has none of them.
VERBAL_PUNCT: dict[str, str] = {
    "COMMA": ",",
    "PERIOD": ".",
    "FULL-STOP": ".",
    "QUESTION-MARK": "?",
    "EXCLAMATION-POINT": "!",
    "EXCLAMATION-MARK": "!",
    "SEMI-COLON": ";",
    "COLON": ":",
    "HYPHEN": "-",
    "DASH": "--",
    "ELLIPSIS": "...",
    "DOUBLE-QUOTE": "",
    "SINGLE-QUOTE": "",
    "QUOTE": "",
    "UNQUOTE": "",
    "END-QUOTE": "",
    "CLOSE-QUOTE": "",
    "END-OF-QUOTE": "",
    "LEFT-PAREN": "",
    "RIGHT-PAREN": "",
    "PAREN": "",
    "CLOSE-PAREN": "",
    "END-PAREN": "",
    "END-THE-PAREN": "",
    "LEFT-BRACE": "",
    "RIGHT-BRACE": "",
    "LEFT-BRACKET": "",
    "RIGHT-BRACKET": "",
}
_GLUE = {  # text -> (output, glued to the previous token, glued to the next token)
    ",": (",", True, False),
    ".": (".", True, False),
    "?": ("?", True, False),
    "!": ("!", True, False),
    ";": (";", True, False),
    ":": (":", True, False),
    "...": ("...", True, False),
    "-": ("-", True, True),
    "--": ("-", False, False),
    "": ("", False, False),
}
# Symbol names that are words in any reading (``%PERCENT``, ``.POINT``): the word stays.
SPOKEN_SYMBOLS = frozenset({"PERCENT", "POINT", "DECIMAL", "AMPERSAND", "SLASH", "DOT", "SHARP-SIGN", "PLUS", "EQUALS"})

_NOISE = re.compile(r"\[[^\]]*\]")  # [loud_breath] [<door_slam] [door_slam>] [/door_slam]
_VERBAL = re.compile(r"^([^\w\s]+)([A-Za-z]+(?:-[A-Za-z]+)*)$")  # <punct chars or \><NAME>
_LINE = re.compile(r"^(.*?)\s*\((\w+)\)\s*$")


def _pieces(text: str) -> Iterable[tuple[str, bool, bool]]:
    """(text, glue left, glue right) for each surviving token of a transcript."""
    for tok in _NOISE.sub(" ", text).split():
        tok = tok.replace("~", "").strip("<>*")  # ~ truncation; <deleted>, *mispronounced*
        m = _VERBAL.match(tok)
        name = m.group(2).upper() if m else ""
        if m and name in VERBAL_PUNCT:
            yield _GLUE[VERBAL_PUNCT[name]]
        elif m and name in SPOKEN_SYMBOLS:
            yield m.group(2), False, False
        else:  # A:ND lengthening, AT\&T escapes; a lone mark (".", "-") is no word
            word = tok.replace(":", "").replace("\\", "")
            if any(c.isalnum() for c in word):
                yield word, False, False


def normalize_dot(text: str) -> str:
    """A WSJ ``.dot`` transcript (without its ``(uttid)``) as plain text.

    Noise markers ``[...]`` go; ``<word>``, ``*word*``, ``A:ND`` and ``~`` lose their
    marks; verbal punctuation becomes its character (``\\COMMA``/``,COMMA`` -> ``,``,
    ``-HYPHEN`` joins its neighbours, quotes/parens/braces vanish, see
    :data:`VERBAL_PUNCT`); ``.`` inside words (``U.S.``) and fragments (``EX-``) stay.
    """
    out, glue = "", True
    for piece, left, right in _pieces(text):
        if piece:
            out += piece if glue or left else " " + piece
            glue = right
    return out.strip()


class WSJCorpus(Corpus):
    """Transcripts of the LDC WSJ0/WSJ1 discs: SI-284 / dev93 / eval92 (see module docstring).

    Args:
        root: folder holding the unpacked discs (searched recursively for ``*.dot``).
        train_subsets, dev_subsets, test_subsets: subset folder names of each split.
    """

    name = "wsj"

    def __init__(
        self,
        root: str,
        train_subsets: Iterable[str] = ("si_tr_s",),
        dev_subsets: Iterable[str] = ("si_dt_20",),
        test_subsets: Iterable[str] = ("si_et_05",),
    ) -> None:
        self.root = Path(root)
        self.subsets = {"train": tuple(train_subsets), "dev": tuple(dev_subsets), "test": tuple(test_subsets)}

    def files(self) -> list[Path]:
        """Every ``.dot`` file below ``root``, in path order."""
        if not self.root.is_dir():
            raise CorpusError(
                f"WSJ root {self.root} does not exist or is not a folder; expected the folder "
                "holding the unpacked LDC WSJ0/WSJ1 discs (LDC93S6A/B, LDC94S13A/B)"
            )
        found = sorted(
            Path(d, f)
            for d, _, names in os.walk(self.root, followlinks=True)  # discs may be links
            for f in names
            if f.lower().endswith(".dot")
        )
        if not found:
            raise CorpusError(
                f"no .dot transcript files found below WSJ root {self.root}; expected the WSJ0/WSJ1 "
                "transcripts, e.g. <root>/wsj0/transcrp/dots/si_tr_s/01a/01ac0100.dot"
            )
        return found

    def split_of(self, path: Path) -> str | None:
        """The split whose subset folder name is among the path's components, if any."""
        parts = {p.lower() for p in path.relative_to(self.root).parts[:-1]}
        hits = [s for s, names in self.subsets.items() if any(n.lower() in parts for n in names)]
        if len(hits) > 1:
            raise CorpusError(
                f"{path} lies in subset folders of several splits ({', '.join(hits)}); "
                "make train_subsets, dev_subsets and test_subsets disjoint"
            )
        return hits[0] if hits else None

    @staticmethod
    def read_dot(path: Path) -> list[tuple[str, str]]:
        """(uttid, raw transcript) of each non-blank line of a ``.dot`` file."""
        return [
            (m.group(2), m.group(1)) for m in matched_lines(path, _LINE, "WSJ transcript file", "'TRANSCRIPT (UTTID)'")
        ]

    def load(self) -> Splits:
        utts: dict[str, dict[str, str]] = {s: {} for s in self.subsets}
        for path in self.files():
            split = self.split_of(path)
            if split is not None:
                for uttid, text in self.read_dot(path):
                    utts[split].setdefault(uttid, text)
        out = {}
        for split, found in utts.items():
            if not found:
                raise CorpusError(
                    f"WSJ split {split!r} is empty: no .dot files below {self.root} lie in a folder named "
                    f"{' or '.join(map(repr, self.subsets[split]))} (case-insensitive); set {split}_subsets "
                    "to the subset folder names of your copy"
                )
            out[split] = [s for s in (normalize_dot(found[u]) for u in sorted(found)) if s]
        return Splits(**out)
