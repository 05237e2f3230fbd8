"""The symbol set and the text normalisation every model and probe shares.

The default symbol set is the reference's: lowercase ``a``–``z``, space, ``.``, ``,``,
``'`` and ``#``, with every digit ``0``–``9`` mapped to ``#`` (31 symbols).

Normalisation of one segment, in this order:

1. case folding (``lowercase``),
2. digits to ``digit_symbol``,
3. the explicit character map ``char_map`` (by default sentence-final punctuation
   ``! ?`` becomes ``.``, clause punctuation ``; :`` becomes ``,``, dashes and tabs
   become a space, typographic apostrophes become ``'``),
4. every remaining character outside the symbol set is handled by ``oov``:
   ``drop`` (removed), ``space`` (becomes a space) or ``unk`` (becomes ``unk_symbol``,
   which is then part of the symbol set),
5. runs of spaces collapse to one and the segment is stripped.

A :class:`Vocab` is saved with every checkpoint (:meth:`Vocab.to_dict`) and compared on
load (:meth:`Vocab.check_same`), so a model is never fed ids of another symbol set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

import torch

DEFAULT_SYMBOLS = " abcdefghijklmnopqrstuvwxyz.,'#"
DEFAULT_CHAR_MAP: dict[str, str] = {
    "!": ".",
    "?": ".",
    ";": ",",
    ":": ",",
    "-": " ",
    "\u2013": " ",
    "\u2014": " ",
    "\t": " ",
    "\u2019": "'",
    "\u2018": "'",
}
OOVPolicy = Literal["drop", "space", "unk"]
_SPACES = re.compile(r" {2,}")


class VocabMismatchError(ValueError):
    """Raised when two symbol sets that must agree (checkpoint vs data) do not."""


class Vocab:
    """A discrete symbol set with its normalisation rules (immutable after construction).

    Args:
        symbols: the symbols in id order (one character each).
        extra_symbols: characters appended after ``symbols`` (e.g. ``"!?"`` to keep them).
        lowercase: fold case before anything else.
        digit_symbol: every decimal digit becomes this symbol (``None`` keeps digits
            as ordinary characters).
        char_map: single-character replacements applied after case folding and digits;
            a character mapped to ``""`` is dropped.
        oov: what happens to characters still outside the symbol set.
        unk_symbol: the symbol used by ``oov="unk"``; appended to the set.

    A plain class rather than a dataclass, so Hydra passes it to ``instantiate`` as an
    object instead of turning it into a config.
    """

    def __init__(
        self,
        symbols: str = DEFAULT_SYMBOLS,
        extra_symbols: str = "",
        lowercase: bool = True,
        digit_symbol: str | None = "#",
        char_map: dict[str, str] | None = None,
        oov: OOVPolicy = "drop",
        unk_symbol: str = "~",
    ) -> None:
        self.symbols, self.extra_symbols, self.lowercase = symbols, extra_symbols, lowercase
        self.digit_symbol, self.oov, self.unk_symbol = digit_symbol, oov, unk_symbol
        self.char_map = dict(DEFAULT_CHAR_MAP if char_map is None else char_map)
        if oov not in ("drop", "space", "unk"):
            raise ValueError(f"vocab.oov must be one of drop, space, unk; got {oov!r}")
        alphabet = self.alphabet
        if any(len(c) != 1 for c in (symbols, extra_symbols) for c in c) or len(set(alphabet)) != len(alphabet):
            dupes = sorted({c for c in alphabet if alphabet.count(c) > 1})
            raise ValueError(f"vocab symbols must be unique single characters; repeated: {dupes}")
        if any(len(v) > 1 for v in self.char_map.values()):
            raise ValueError("vocab.char_map values must be single characters or ''")
        if digit_symbol is not None and digit_symbol not in alphabet:
            raise ValueError(f"vocab.digit_symbol {digit_symbol!r} is not in the symbol set {alphabet!r}")
        self._table: dict[int, str | None] = {ord(ch): (t or None) for ch, t in self.char_map.items()}
        if digit_symbol is not None:
            self._table.update({ord(d): digit_symbol for d in "0123456789"})
        self._index = {c: i for i, c in enumerate(alphabet)}
        self._allowed = frozenset(alphabet)
        self._outside = re.compile(f"[^{re.escape(alphabet)}]")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.alphabet)

    def __repr__(self) -> str:
        return f"Vocab({self.alphabet!r}, oov={self.oov!r})"

    # ------------------------------------------------------------------ properties
    @property
    def alphabet(self) -> str:
        """All symbols in id order (``symbols + extra_symbols [+ unk_symbol]``)."""
        unk = self.unk_symbol if self.oov == "unk" else ""
        return self.symbols + self.extra_symbols + unk

    def __len__(self) -> int:
        return len(self.alphabet)

    @property
    def labels(self) -> list[str]:
        """Symbols as printable labels for plots and tables (space shown as ``␣``)."""
        return ["\u2423" if c == " " else c for c in self.alphabet]

    # --------------------------------------------------------------- normalising
    def normalize(self, text: str) -> str:
        """Map raw text of one segment onto the symbol set (see module docstring)."""
        text = self._fold(text)
        allowed = self._allowed
        if any(c not in allowed for c in text):
            repl = {"drop": "", "space": " ", "unk": self.unk_symbol}[self.oov]
            text = "".join(c if c in allowed else repl for c in text)
        return _SPACES.sub(" ", text).strip()

    def outside(self, text: str) -> list[str]:
        """The characters of raw ``text`` that normalisation hands to ``oov``: those outside the
        symbol set after case folding, digits and ``char_map``, in order."""
        return self._outside.findall(self._fold(text))

    def _fold(self, text: str) -> str:
        """Normalisation steps 1-3: case folding, digits, ``char_map``."""
        return (text.lower() if self.lowercase else text).translate(self._table)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of already normalised text. Returns ``[len(text)]`` uint8/long tensor."""
        index = self._index
        try:
            ids = [index[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"symbol {err.args[0]!r} is not in the symbol set {self.alphabet!r}: "
                "normalize the text first (Vocab.normalize) or add it to vocab.extra_symbols"
            ) from None
        dtype = torch.uint8 if len(self) <= 256 else torch.int32
        return torch.tensor(ids, dtype=dtype)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of a sequence of ids."""
        alphabet = self.alphabet
        return "".join(alphabet[int(i)] for i in ids)

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_dict` turns back into an equal Vocab."""
        return {
            "symbols": self.symbols,
            "extra_symbols": self.extra_symbols,
            "lowercase": self.lowercase,
            "digit_symbol": self.digit_symbol,
            "char_map": dict(self.char_map),
            "oov": self.oov,
            "unk_symbol": self.unk_symbol,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        return cls(**{k: (dict(v) if k == "char_map" else v) for k, v in d.items()})

    def check_same(self, other: Vocab, what: str = "checkpoint") -> None:
        """Raise :class:`VocabMismatchError` unless ``other`` encodes text exactly as self."""
        if self.to_dict() == other.to_dict():
            return
        mine, theirs = self.to_dict(), other.to_dict()
        diffs = [f"{k}: {theirs[k]!r} (in {what}) vs {mine[k]!r} (here)" for k in mine if mine[k] != theirs[k]]
        raise VocabMismatchError(
            f"the {what} was made with another symbol set; "
            + "; ".join(diffs)
            + ". Use the vocab the model was trained with (e.g. vocab settings from the "
            "checkpoint's run config) or retrain the model."
        )
