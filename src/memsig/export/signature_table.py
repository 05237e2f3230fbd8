"""A :class:`~memsig.probe.signature.Signature` as a long table (CSV) and as labelled arrays (netCDF).

CSV (:func:`write_signature_csv`, schema ``memsig.signature.csv/1``): one row per
(state, lag, symbol), in that order, with the columns of :data:`CSV_COLUMNS`:

=================  ===========================================================
``schema``         ``memsig.signature.csv/1`` on every row
``state``          probed state (controls prefixed ``random:`` / ``shuffled:``)
``lag``            lag δ
``symbol``         the target symbol (its plot label, space as ``␣``)
``prior``          the symbol's training frequency
``support``        test positions whose target is the symbol
``correct``        of those, recalled correctly
``recall``         correct / support; empty below the signature's ``min_support``
``recall_low``,    95 % interval of ``recall`` (:meth:`Signature.recall_ci`; empty like it)
``recall_high``
``forward_recall`` the model's own next-symbol accuracy on the symbol (empty if unknown)
``accuracy``       overall recall of (state, lag) — repeated on its symbols' rows
``ce_bits``        the decoder's test cross-entropy in bits, per (state, lag)
``info_bits``      CE(prior) − ce_bits on the same test positions, per (state, lag)
``majority_rate``  accuracy of always answering the most frequent symbol, per (state, lag)
=================  ===========================================================

netCDF (:func:`save_signature_nc` / :func:`load_signature_nc`, schema
``memsig.signature.nc/1``, written with the ``h5netcdf`` engine): the
:func:`signature_dataset` — dims ``state``, ``lag``, ``symbol`` (true) and ``predicted`` —
with the confusion counts, the derived recall arrays and the provenance in its attributes.
It loads back into an equal Signature.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import xarray as xr

from memsig.data.io import atomic_write_bytes
from memsig.export.staging import staged
from memsig.probe.signature import SCHEMA as SIGNATURE_SCHEMA
from memsig.probe.signature import Signature, _jsonable

CSV_SCHEMA = "memsig.signature.csv/1"
NC_SCHEMA = "memsig.signature.nc/1"
CSV_COLUMNS = [
    "schema",
    "state",
    "lag",
    "symbol",
    "prior",
    "support",
    "correct",
    "recall",
    "recall_low",
    "recall_high",
    "forward_recall",
    "accuracy",
    "ce_bits",
    "info_bits",
    "majority_rate",
]


def _cell(x: object) -> object:
    """A CSV field: NaN as an empty field, floats at full precision (``repr``)."""
    if isinstance(x, float):
        return "" if np.isnan(x) else repr(x)
    return x


def write_signature_csv(sig: Signature, path: str | Path) -> Path:
    """Write ``sig`` as the long table of the module docstring (UTF-8, atomic); returns ``path``."""
    s, k, c = len(sig.states), len(sig.lags), len(sig.symbols)
    low, high = sig.recall_ci()
    forward = sig.forward_recall if sig.forward_recall is not None else np.full(c, np.nan)
    grid = {  # every column as an [S, K, C] array
        "state": np.array(sig.states, dtype=object)[:, None, None],
        "lag": np.array(sig.lags)[None, :, None],
        "symbol": np.array(sig.symbols, dtype=object)[None, None, :],
        "prior": sig.prior[None, None, :],
        "support": sig.support,
        "correct": sig.correct,
        "recall": sig.recall,
        "recall_low": low,
        "recall_high": high,
        "forward_recall": forward[None, None, :],
        **{name: getattr(sig, name)[:, :, None] for name in ("accuracy", "ce_bits", "info_bits", "majority_rate")},
    }
    columns = {name: np.broadcast_to(a, (s, k, c)).ravel().tolist() for name, a in grid.items()}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(s * k * c):
        writer.writerow([CSV_SCHEMA, *(_cell(columns[name][i]) for name in CSV_COLUMNS[1:])])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return Path(path)


def signature_dataset(sig: Signature) -> xr.Dataset:
    """``sig`` as labelled arrays.

    Variables: ``confusion`` ``[state, lag, symbol, predicted]``; ``support``, ``recall``,
    ``recall_low``, ``recall_high`` ``[state, lag, symbol]``; ``accuracy``, ``ce_bits``,
    ``info_bits``, ``majority_rate`` ``[state, lag]``; ``prior`` ``[symbol]``; and
    ``forward_confusion`` ``[symbol, predicted]`` when the signature has it. Attributes:
    ``schema``, ``signature_schema``, ``min_support`` and ``meta`` (the provenance, JSON).
    """
    cell, marginal = ("state", "lag", "symbol"), ("state", "lag")
    low, high = sig.recall_ci()
    variables = {
        "confusion": (("state", "lag", "symbol", "predicted"), sig.confusion.astype(np.int64)),
        "support": (cell, sig.support.astype(np.int64)),
        "recall": (cell, sig.recall),
        "recall_low": (cell, low),
        "recall_high": (cell, high),
        "accuracy": (marginal, sig.accuracy),
        "ce_bits": (marginal, sig.ce_bits.astype(np.float64)),
        "info_bits": (marginal, sig.info_bits),
        "majority_rate": (marginal, sig.majority_rate),
        "prior": (("symbol",), sig.prior.astype(np.float64)),
    }
    if sig.forward_confusion is not None:
        variables["forward_confusion"] = (("symbol", "predicted"), sig.forward_confusion.astype(np.int64))
    coords = {
        "state": np.array(sig.states, dtype=object),
        "lag": np.array(sig.lags, dtype=np.int64),
        "symbol": np.array(sig.symbols, dtype=object),
        "predicted": np.array(sig.symbols, dtype=object),
    }
    attrs = {
        "schema": NC_SCHEMA,
        "signature_schema": SIGNATURE_SCHEMA,
        "min_support": int(sig.min_support),
        "meta": json.dumps(sig.meta, default=_jsonable),
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def save_signature_nc(sig: Signature, path: str | Path) -> Path:
    """Write :func:`signature_dataset` of ``sig`` to netCDF-4 (h5netcdf, compressed, atomic)."""
    ds = signature_dataset(sig)
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    with staged(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
    return Path(path)


def load_signature_nc(path: str | Path) -> Signature:
    """The Signature saved by :func:`save_signature_nc` (equal to the one saved)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"signature file {path} does not exist; export.py what=signature writes signature.nc")
    ds = xr.load_dataset(path, engine="h5netcdf")
    if ds.attrs.get("schema") != NC_SCHEMA:
        raise ValueError(f"{path} is not a memsig signature (schema {ds.attrs.get('schema')!r}, expected {NC_SCHEMA})")
    forward = ds["forward_confusion"].values if "forward_confusion" in ds else None
    return Signature(
        [str(s) for s in ds["state"].values],
        [int(x) for x in ds["lag"].values],
        [str(s) for s in ds["symbol"].values],
        ds["confusion"].values,
        ds["ce_bits"].values,
        ds["prior"].values,
        forward,
        json.loads(ds.attrs["meta"]),
        int(ds.attrs["min_support"]),
    )
