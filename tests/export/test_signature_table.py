"""Signature exports: the long CSV table and the netCDF arrays (round trip)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from memsig.export.signature_table import (
    CSV_COLUMNS,
    CSV_SCHEMA,
    NC_SCHEMA,
    load_signature_nc,
    save_signature_nc,
    write_signature_csv,
)
from memsig.probe.signature import Signature

SYMBOLS = ["a", "b", ",", "\u2423"]  # "," must survive CSV quoting; "␣" is the space label


def make_signature(forward: bool = True) -> Signature:
    """Two states x three lags; symbol "b" has 5 test positions (below min_support)."""
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 40, size=(2, 3, 4, 4)).astype(np.int64)
    conf[:, :, 1] = [1, 2, 1, 1]  # support 5 < 20
    fwd = rng.integers(0, 50, size=(4, 4)).astype(np.int64) if forward else None
    meta = {"model": {"class": "CharLM", "hidden_size": 96}, "split": "test", "seed": 0, "lags": [1, 2, 5]}
    return Signature(
        ["layer1.c", "shuffled:layer1.c"],
        [1, 2, 5],
        list(SYMBOLS),
        conf,
        rng.uniform(0.5, 3.0, size=(2, 3)),
        np.array([0.5, 0.1, 0.15, 0.25]),
        fwd,
        meta,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def number(field: str) -> float:
    return math.nan if field == "" else float(field)


def test_csv_has_one_row_per_cell_with_the_signature_values(tmp_path: Path):
    sig = make_signature()
    rows = read_csv(write_signature_csv(sig, tmp_path / "sig.csv"))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 2 * 3 * 4
    assert {r["schema"] for r in rows} == {CSV_SCHEMA}
    assert [(r["state"], int(r["lag"]), r["symbol"]) for r in rows[:5]] == [
        ("layer1.c", 1, "a"),
        ("layer1.c", 1, "b"),
        ("layer1.c", 1, ","),
        ("layer1.c", 1, "\u2423"),
        ("layer1.c", 2, "a"),
    ]
    low, high = sig.recall_ci()
    for r in rows:
        i, j, k = sig.states.index(r["state"]), sig.lags.index(int(r["lag"])), sig.symbols.index(r["symbol"])
        assert int(r["support"]) == sig.support[i, j, k] and int(r["correct"]) == sig.correct[i, j, k]
        assert float(r["prior"]) == sig.prior[k] and number(r["forward_recall"]) == pytest.approx(
            sig.forward_recall[k], nan_ok=True
        )
        for name, want in [("recall", sig.recall), ("recall_low", low), ("recall_high", high)]:
            assert number(r[name]) == pytest.approx(want[i, j, k], nan_ok=True, rel=0, abs=0)
        for name in ("accuracy", "ce_bits", "info_bits", "majority_rate"):
            assert float(r[name]) == getattr(sig, name)[i, j]  # full precision
    rare = [r for r in rows if r["symbol"] == "b"]
    assert rare and all(r["support"] == "5" and r["recall"] == r["recall_low"] == "" for r in rare)


def test_csv_without_forward_confusion_leaves_the_column_empty(tmp_path: Path):
    rows = read_csv(write_signature_csv(make_signature(forward=False), tmp_path / "sig.csv"))
    assert {r["forward_recall"] for r in rows} == {""}


@pytest.mark.parametrize("forward", [True, False])
def test_netcdf_round_trip_is_exact(tmp_path: Path, forward: bool):
    sig = make_signature(forward)
    path = save_signature_nc(sig, tmp_path / "sig.nc")
    assert load_signature_nc(path) == sig
    assert [p.name for p in tmp_path.iterdir()] == ["sig.nc"]  # no temporary left behind
    # a signature loaded from .npz (JSON-normalised meta) also survives
    npz = Signature.load(sig.save(tmp_path / "sig.npz"))
    assert load_signature_nc(save_signature_nc(npz, tmp_path / "again.nc")) == npz


def test_netcdf_arrays_are_labelled(tmp_path: Path):
    sig = make_signature()
    ds = xr.load_dataset(save_signature_nc(sig, tmp_path / "sig.nc"), engine="h5netcdf")
    assert ds.attrs["schema"] == NC_SCHEMA and ds.attrs["min_support"] == 20
    assert dict(ds.sizes) == {"state": 2, "lag": 3, "symbol": 4, "predicted": 4}
    assert ds["confusion"].dims == ("state", "lag", "symbol", "predicted")
    assert ds["recall"].sel(state="layer1.c", lag=5, symbol="a") == sig.recall[0, 2, 0]
    assert np.isnan(ds["recall"].sel(symbol="b")).all()
    assert ds["info_bits"].dims == ("state", "lag") and ds["prior"].dims == ("symbol",)
    np.testing.assert_array_equal(ds["support"].values, sig.support)
    np.testing.assert_array_equal(ds["majority_rate"].values, sig.majority_rate)


def test_load_names_a_missing_or_foreign_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_signature_nc(tmp_path / "nope.nc")
    xr.Dataset({"x": ("a", [1, 2])}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="not a memsig signature"):
        load_signature_nc(tmp_path / "other.nc")
