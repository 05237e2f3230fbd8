"""The memory signature: what the probes recalled, per state, lag and symbol.

Everything derives from the test confusion matrices (rows: true symbol, columns:
predicted) of each decoder (state, lag), plus the decoders' cross-entropy, the training
prior and the model's own next-symbol confusion. Saved as one ``.npz`` file whose
``meta`` entry (JSON) names the axes — ``state`` (probed states, controls prefixed
``random:`` / ``shuffled:``), ``lag`` (see :mod:`memsig.probe.targets`), ``symbol`` —
and holds the provenance (model config, checkpoint hash, split, probe config, seed).
It loads back exactly (:meth:`Signature.load`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsig.data.io import atomic_write_bytes

SCHEMA = "memsig.signature/1"
CONTROL_PREFIXES = ("random:", "shuffled:")


def wilson(successes: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion (elementwise; NaN where ``n == 0``)."""
    n_ = np.where(n > 0, n, np.nan).astype(float)
    p = successes / n_
    denom = 1 + z**2 / n_
    centre = (p + z**2 / (2 * n_)) / denom
    half = z * np.sqrt(p * (1 - p) / n_ + z**2 / (4 * n_**2)) / denom
    return centre - half, centre + half


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@dataclass
class Signature:
    """Recall of the probed states (see module docstring).

    Attributes:
        states: S probed state names (controls included).
        lags: K lags.
        symbols: C target labels (as shown in plots).
        confusion: ``[S, K, C, C]`` int64 test counts, rows true, columns predicted.
        ce_bits: ``[S, K]`` mean test cross-entropy of each decoder, bits.
        prior: ``[C]`` target frequencies on the training split.
        forward_confusion: ``[C, C]`` the model's own next-symbol confusion on test (or None).
        meta: provenance and settings (JSON-serialisable).
        min_support: cells with fewer test positions than this are NaN, not 0.
    """

    states: list[str]
    lags: list[int]
    symbols: list[str]
    confusion: np.ndarray
    ce_bits: np.ndarray
    prior: np.ndarray
    forward_confusion: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    min_support: int = 20

    def __post_init__(self) -> None:
        s, k, c = len(self.states), len(self.lags), len(self.symbols)
        if self.confusion.shape != (s, k, c, c):
            raise ValueError(f"confusion has shape {self.confusion.shape}; expected {(s, k, c, c)}")
        if self.ce_bits.shape != (s, k) or self.prior.shape != (c,):
            raise ValueError("ce_bits must be [states, lags] and prior [symbols]")

    # ------------------------------------------------------------------ derived
    @property
    def support(self) -> np.ndarray:
        """``[S, K, C]`` test positions whose target is each symbol."""
        return self.confusion.sum(-1)

    @property
    def correct(self) -> np.ndarray:
        """``[S, K, C]`` correctly recalled positions per symbol."""
        return np.diagonal(self.confusion, axis1=-2, axis2=-1)

    @property
    def accuracy(self) -> np.ndarray:
        """``[S, K]`` overall recall (marginal accuracy per lag)."""
        return self.correct.sum(-1) / np.maximum(self.support.sum(-1), 1)

    @property
    def recall(self) -> np.ndarray:
        """``[S, K, C]`` per-symbol recall; NaN where support < ``min_support``."""
        sup = self.support
        return np.where(sup >= self.min_support, self.correct / np.maximum(sup, 1), np.nan)

    def recall_ci(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Wilson interval ``(low, high)`` of :attr:`recall`, each ``[S, K, C]`` (NaN like recall)."""
        lo, hi = wilson(self.correct, self.support, z)
        low_support = self.support < self.min_support
        return np.where(low_support, np.nan, lo), np.where(low_support, np.nan, hi)

    @property
    def prior_entropy_bits(self) -> float:
        return entropy_bits(self.prior)

    @property
    def info_bits(self) -> np.ndarray:
        """``[S, K]`` information kept: ``H(prior) - CE`` in bits (0 = no better than the prior)."""
        return self.prior_entropy_bits - self.ce_bits

    @property
    def majority_rate(self) -> np.ndarray:
        """``[S, K]`` accuracy of always answering the most frequent training symbol."""
        return self.support[..., int(np.argmax(self.prior))] / np.maximum(self.support.sum(-1), 1)

    @property
    def prior_rate(self) -> np.ndarray:
        """``[S, K]`` expected accuracy of guessing by sampling the training prior."""
        return (self.support * self.prior).sum(-1) / np.maximum(self.support.sum(-1), 1)

    @property
    def forward_recall(self) -> np.ndarray | None:
        """``[C]`` the model's own next-symbol accuracy per true symbol (NaN on low support)."""
        if self.forward_confusion is None:
            return None
        sup = self.forward_confusion.sum(-1)
        return np.where(sup >= self.min_support, np.diagonal(self.forward_confusion) / np.maximum(sup, 1), np.nan)

    @property
    def real_states(self) -> list[str]:
        return [s for s in self.states if not s.startswith(CONTROL_PREFIXES)]

    def index(self, state: str) -> int:
        try:
            return self.states.index(state)
        except ValueError:
            raise KeyError(f"state {state!r} not in signature; it has {self.states}") from None

    def select(self, states: list[str]) -> Signature:
        """A signature with only ``states`` (in that order)."""
        idx = [self.index(s) for s in states]
        return Signature(
            list(states),
            list(self.lags),
            list(self.symbols),
            self.confusion[idx],
            self.ce_bits[idx],
            self.prior,
            self.forward_confusion,
            dict(self.meta),
            self.min_support,
        )

    def table(self) -> str:
        """Marginal recall per lag (rows) and state (columns) as aligned text."""
        width = max(12, *(len(s) + 2 for s in self.states))
        head = "lag".rjust(5) + "".join(s.rjust(width) for s in self.states) + "majority".rjust(10)
        rows = [head]
        for j, lag in enumerate(self.lags):
            rows.append(
                f"{lag:5d}"
                + "".join(f"{self.accuracy[i, j]:{width}.3f}" for i in range(len(self.states)))
                + f"{self.majority_rate[0, j]:10.3f}"
            )
        return "\n".join(rows)

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the signature as one ``.npz`` (atomic)."""
        arrays = {
            "confusion": self.confusion.astype(np.int64),
            "ce_bits": self.ce_bits.astype(np.float64),
            "prior": self.prior.astype(np.float64),
        }
        if self.forward_confusion is not None:
            arrays["forward_confusion"] = self.forward_confusion.astype(np.int64)
        axes = {"state": self.states, "lag": self.lags, "symbol": self.symbols}
        return write_labelled(path, SCHEMA, axes, self.min_support, self.meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> Signature:
        head, z = read_labelled(path, SCHEMA, "signature", "probe.py writes signature.npz into its run dir")
        axes = head["axes"]
        return cls(
            list(axes["state"]),
            [int(x) for x in axes["lag"]],
            list(axes["symbol"]),
            z["confusion"],
            z["ce_bits"],
            z["prior"],
            z.get("forward_confusion"),
            head["meta"],
            int(head["min_support"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signature):
            return NotImplemented
        same_fwd = (self.forward_confusion is None and other.forward_confusion is None) or (
            self.forward_confusion is not None
            and other.forward_confusion is not None
            and np.array_equal(self.forward_confusion, other.forward_confusion)
        )
        return (
            self.states == other.states
            and self.lags == other.lags
            and self.symbols == other.symbols
            and np.array_equal(self.confusion, other.confusion)
            and np.array_equal(self.ce_bits, other.ce_bits)
            and np.array_equal(self.prior, other.prior)
            and same_fwd
            and self.meta == other.meta
            and self.min_support == other.min_support
        )


def write_labelled(
    path: str | Path,
    schema: str,
    axes: dict[str, list],
    min_support: int,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> Path:
    """Write ``arrays`` as one compressed ``.npz`` (atomic) with a JSON ``meta`` entry naming the
    ``schema``, the ``axes`` labels, ``min_support`` and the provenance ``meta``."""
    head = {"schema": schema, "axes": axes, "min_support": min_support, "meta": meta}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, meta=np.array(json.dumps(head, default=_jsonable)))
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def read_labelled(
    path: str | Path, schema: str, what: str, writer: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON head and the arrays of a :func:`write_labelled` file of ``schema``; ``what`` and
    ``writer`` (which command writes it) name the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist; {writer}")
    with np.load(path, allow_pickle=False) as z:
        head = json.loads(str(z["meta"]))
        if head.get("schema") != schema:
            raise ValueError(f"{path} is not a memsig {what} file (schema {head.get('schema')!r}, expected {schema})")
        return head, {k: z[k] for k in z.files if k != "meta"}


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)
