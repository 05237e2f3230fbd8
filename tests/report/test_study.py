"""One Study, built from signature files or from a multirun, rendered by the same code as static files
and as the interactive page: the same names, figures and distances either way."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from memsig.plots.specs import BITS, memory_points
from memsig.probe.signature import Signature
from memsig.report import Study, StudySettings, study_page, write_page, write_static
from memsig.report.__main__ import main as report_main
from memsig.report.page import figures_of

from report_helpers import STATES, conditional_bits_per_lag, with_conditional, write_sweep, write_train_run


def rendered(study: Study, out: Path) -> tuple[set[str], dict, list[dict[str, str]]]:
    """Write ``study`` both ways into ``out``: the static file names, the page's figures, distances.csv."""
    write_static(study, out, ("png",))
    page = write_page(study_page(study), out / "interactive.html")
    with (out / "distances.csv").open() as f:
        return {p.name for p in out.iterdir()}, figures_of(page.read_text()), list(csv.DictReader(f))


def test_a_study_of_signature_files_renders_as_the_study_of_their_multirun(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    settings = StudySettings(n_boot=20)
    of_sweep = Study.from_sweep(sweep, settings)
    files = [sweep / job / "signatures" / "main.npz" for job in ("0", "1")]
    of_files = Study.from_signatures(files, ["32", "64"], settings)
    assert of_files.model_rows() == of_sweep.model_rows()  # the metrics of each file's train run
    assert of_files.distances == of_sweep.distances and of_files.pairs == of_sweep.pairs == [("32", "64")]
    (d, lo, hi) = of_sweep.distances["32", "64"]
    for study, out in ((of_sweep, tmp_path / "sweep_static"), (of_files, tmp_path / "files")):
        names, figures, distances = rendered(study, out)
        assert {"marginal_recall.png", "side_by_side.png", "difference_32_vs_64.png", "models.csv"} <= names
        assert {"recall.csv", "memory.csv", "memory_vs_perplexity.png", "distances.csv", "report.md"} <= names
        assert {"report.html", "interactive.html"} <= names
        assert list(figures) == ["study/marginal", "study/memory", "study/side_by_side", "study/differences"]
        assert [t.name for t in figures["study/side_by_side"].data] == ["32", "64"]
        assert figures["study/differences"].data[0].name == "32 − 64"
        assert distances == [
            {
                "a": "32",
                "b": "64",
                "distance": str(round(d, 4)),
                "low": str(round(lo, 4)),
                "high": str(round(hi, 4)),
                "lags": "1 2 3 4 5 6",
                "lags_left_out": "",
            }
        ]
        assert "<td>12345</td>" in (out / "report.html").read_text()  # the models table, static page too


def test_the_state_asked_for_is_compared_in_every_signature(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    study = Study.from_sweep(sweep, StudySettings(state=STATES[1], n_boot=20))
    assert study.states == {"32": STATES[1], "64": STATES[1]}
    panels = figures_of(study_page(study).render())["study/side_by_side"]
    assert [a.text for a in panels.layout.annotations] == [f"32 — {STATES[1]}", f"64 — {STATES[1]}"]
    with pytest.raises(ValueError, match=r"state 'layer9\.c' is not a probed state of 32, 64"):
        Study.from_sweep(sweep, StudySettings(state="layer9.c"))


def test_report_py_writes_both_renderings_of_signature_files(tmp_path: Path, capsys) -> None:
    sweep = write_sweep(tmp_path)
    a, b = (sweep / job / "signatures" / "main.npz" for job in ("0", "1"))
    out = tmp_path / "out"
    argv = [str(a), str(b), "--names", "small", "large", "--difference", "large", "small", "--out", str(out)]
    assert report_main([*argv, "--n-boot", "20"]) == 0
    assert f"report: {out / 'interactive.html'}" in capsys.readouterr().out
    assert (out / "difference_large_vs_small.png").is_file() and not (out / "difference_small_vs_large.png").exists()
    figures = figures_of((out / "interactive.html").read_text())
    assert [t.name for t in figures["study/differences"].data] == ["large − small"]
    with pytest.raises(SystemExit):
        report_main([str(sweep), "--names", "x", "y"])  # a multirun's models are named by --label


def test_memory_against_perplexity_is_in_bits_beyond_inference_where_every_signature_has_them(tmp_path: Path):
    """Two train runs (test perplexity 4.413 each): their signatures alone give all the state holds
    (Σ CE(prior) − CE over the lags, no interval); with the baseline's decoders, the bits beyond
    inference built into them, with intervals; one without them puts both back on the first measure."""
    runs = [write_train_run(tmp_path / name, memory, seed) for name, memory, seed in (("a", 2.0, 0), ("b", 4.0, 1))]
    plain = [run / "signatures" / "main.npz" for run in runs]
    given = []
    for run, path in zip(runs, plain):
        given.append(with_conditional(Signature.load(path)).save(run / "signatures" / "given.npz"))
    settings = StudySettings(n_boot=20)
    rows = Study.from_signatures(plain, ["a", "b"], settings).memory_rows()
    held = "bits of the past in the state (CE(prior) − CE), δ = 1…6"
    for row, path in zip(rows, plain):
        sig = Signature.load(path)
        assert row["state"] == STATES[0] and row["test ppl"] == 4.413 and row["test bits/char"] == 2.142
        assert row[held] == pytest.approx(sig.info_bits[0].sum(), abs=1e-3) and "low" not in row
    study = Study.from_signatures(given, ["a", "b"], settings)
    beyond = f"{BITS}, δ = 1…6"
    for row in study.memory_rows():
        assert row[beyond] == pytest.approx(
            conditional_bits_per_lag(STATES[0]).sum(), abs=0.01
        )  # blocks of unequal size
        assert row["low"] < row[beyond] < row["high"]
    assert study.memory().ylabel == beyond and len(study.memory().notes) == 1
    mixed = Study.from_signatures([given[0], plain[1]], ["a", "b"], settings).memory_rows()
    assert [set(r) & {held, beyond} for r in mixed] == [{held}, {held}]
    names, figures, _ = rendered(study, tmp_path / "out")
    assert "memory_vs_perplexity.png" in names
    assert [t.name for t in figures["study/memory"].data] == ["a", "b"]
    assert figures["study/memory"].data[0].error_y.array[0] > 0


def test_memory_of_signatures_probed_at_different_lags_is_summed_over_the_lags_they_share(tmp_path: Path):
    """A signature of lags 1–6 beside one cut to lags 1–4: both are summed over 1–4, the label says
    so and a note names the lags left out, rather than comparing sums over different lags."""
    runs = [write_train_run(tmp_path / name, memory, seed) for name, memory, seed in (("a", 2.0, 0), ("b", 4.0, 1))]
    sigs = [with_conditional(Signature.load(run / "signatures" / "main.npz")) for run in runs]
    paths = [
        sigs[0].save(runs[0] / "signatures" / "given.npz"),
        sigs[1].select(lags=[1, 2, 3, 4]).save(runs[1] / "signatures" / "given.npz"),
    ]
    study = Study.from_signatures(paths, ["a", "b"], StudySettings(n_boot=20))
    points = study.memory()
    assert points.ylabel == f"{BITS}, δ = 1…4"
    assert points.notes[-1] == "summed over the lags every signature has; left out: δ = 5…6"
    for name, sig, bits in zip(points.names, sigs, points.y):
        assert bits == pytest.approx(sig.conditional_bits(STATES[0])["bits"][:4].sum()), name
    apart = {"a": sigs[0].select(lags=[1, 2]), "b": sigs[1].select(lags=[3, 4])}
    with pytest.raises(ValueError, match="a, b share no lag ≥ 1 to sum memory over"):
        memory_points(apart, {"a": STATES[0], "b": STATES[0]}, {"a": 4.4, "b": 4.4})
