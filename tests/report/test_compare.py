"""Studies of signature files (report.py a.npz b.npz) and of a multirun: distances on the lags both signatures have,
named; no shared cell stops them before anything is written; a file that is not a signature is named as such."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from memsig.probe.signature import Signature, SignatureError
from memsig.report import Study, StudySettings, write_static
from memsig.report.__main__ import main as report_main

from report_helpers import make_signature, write_probe_run, write_sweep


def toy(path: Path, lags: list[int], recall: float = 0.8) -> Path:
    """One state ``s`` over symbols x, y: 100 test positions per cell, ``recall`` of them right."""
    conf = np.zeros((1, len(lags), 2, 2), dtype=np.int64)
    hits = round(100 * recall)
    conf[0, :] = [[hits, 100 - hits], [100 - hits, hits]]
    return Signature(["s"], lags, ["x", "y"], conf, np.ones((1, len(lags))), np.full(2, 0.5)).save(path)


def test_no_shared_cell_stops_compare_before_anything_is_written(tmp_path):
    a, b = toy(tmp_path / "a.npz", [1, 2, 3]), toy(tmp_path / "b.npz", [9, 10])
    message = (
        r"a vs b: signatures share no \(lag, symbol\) cell: the first has lags \[1, 2, 3\], the second \[9, 10\], "
        r"2 shared symbols; probe both at common lags \(probe\.lags\) to compare them"
    )
    with pytest.raises(ValueError, match=message):
        write_static(Study.from_signatures([a, b], settings=StudySettings(n_boot=20)), tmp_path / "out", ("png",))
    assert not (tmp_path / "out").exists()


def test_compare_names_the_lags_it_measured_on_and_those_left_out(tmp_path, capsys):
    a, b = toy(tmp_path / "a.npz", [1, 2, 3, 4], 0.8), toy(tmp_path / "b.npz", [2, 4, 8], 0.6)
    study = Study.from_signatures([a, b], settings=StudySettings(n_boot=20))
    write_static(study, tmp_path / "out", ("png",))
    assert study.distances["a", "b"][0] == pytest.approx(0.2)
    (row,) = csv.DictReader((tmp_path / "out" / "distances.csv").open())
    assert (row["lags"], row["lags_left_out"]) == ("2 4", "1 3 8")
    assert "note: measured on the lags both have, [2, 4]; lags [1, 3, 8] are in only one and left out" in (
        capsys.readouterr().out
    )


def test_no_shared_cell_stops_the_study_report_before_anything_is_written(tmp_path):
    sweep = write_sweep(tmp_path)
    late = make_signature()
    late.lags = [lag + 100 for lag in late.lags]
    late.save(sweep / "1" / "signatures" / "main.npz")
    with pytest.raises(ValueError, match=r"share no \(lag, symbol\) cell: the first has lags \[1, 2, 3, 4, 5, 6\]"):
        write_static(Study.from_sweep(sweep, StudySettings(n_boot=20)), sweep / "report", ("png",))
    assert not (sweep / "report").exists()


def foreign_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not signatures, each with what the error must say."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "arrays.npz", weights=np.zeros(3))
    np.savez(folder / "other.npz", meta=np.array('{"schema": "someone.else/1"}'), confusion=np.zeros(1))
    np.save(folder / "one.npy", np.zeros(3))
    (folder / "notes.npz").write_text("not an archive")
    return {
        "arrays": (folder / "arrays.npz", r"the archive lacks the arrays \['meta', 'confusion', 'ce_bits', 'prior'\]"),
        "other": (folder / "other.npz", r"its 'meta' entry names schema 'someone\.else/1', expected memsig\.signature"),
        "npy": (folder / "one.npy", "it holds one array, not a .npz archive"),
        "text": (folder / "notes.npz", "it is not a .npz archive"),
    }


def test_a_file_that_is_not_a_signature_is_named_with_what_it_lacks(tmp_path):
    writer = r"a signature is the signature\.npz that `python probe\.py ckpt=<checkpoint>` writes into its run dir"
    for path, lacks in foreign_files(tmp_path).values():
        with pytest.raises(SignatureError, match=rf"{path} is not a memsig signature file: {lacks}.*; {writer}"):
            Signature.load(path)
    assert issubclass(SignatureError, ValueError)
    with pytest.raises(FileNotFoundError, match=rf"signature file {tmp_path / 'none.npz'} does not exist; {writer}"):
        Signature.load(tmp_path / "none.npz")


def test_compare_and_report_name_a_file_that_is_not_a_signature(tmp_path, capsys):
    path, lacks = foreign_files(tmp_path / "files")["arrays"]
    with pytest.raises(SignatureError, match=rf"{path} is not a memsig signature file: {lacks}"):
        Study.from_signatures([toy(tmp_path / "a.npz", [1]), path])
    run = write_probe_run(tmp_path / "root")
    (run / "signature.npz").write_bytes(path.read_bytes())
    assert report_main([str(run)]) == 2
    assert f"report: {run / 'signature.npz'} is not a memsig signature file" in capsys.readouterr().err


def test_report_py_compares_signature_files(tmp_path, capsys):
    a, b = toy(tmp_path / "a.npz", [1, 2], 0.9), toy(tmp_path / "b.npz", [1, 2], 0.6)
    out = tmp_path / "out"
    assert report_main([str(a), str(b), "--names", "A", "B", "--out", str(out), "--n-boot", "20"]) == 0
    assert {"side_by_side.png", "difference_A_vs_B.png", "distances.csv"} <= {p.name for p in out.iterdir()}
    assert "A vs B: 0.3000" in capsys.readouterr().out  # recall 0.9 against 0.6 in every cell
    with pytest.raises(SystemExit):
        report_main([str(a)])  # one file: nothing to compare it with
