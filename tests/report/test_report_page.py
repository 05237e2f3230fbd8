"""The HTML report: self-contained, every state's heatmap with its numbers, run and multirun contents, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from memsig.plots import difference_map, signature_heatmap
from memsig.plots.interactive import colorscale, gradient_decay, gradient_map, singular_spectra
from memsig.plots.specs import DIFFERENCE_CMAP
from memsig.probe.signature import Signature
from memsig.report import ReportError, Study, StudySettings, build_report, write_report, write_static
from memsig.report.__main__ import main
from memsig.report.page import figures_of
from memsig.resolvers import PROJECT_ROOT

from report_helpers import LAGS, STATES, SYMBOLS, write_gradients, write_probe_run, write_sweep, write_train_run


class Refs(HTMLParser):
    """Every src/href/data attribute of the page's tags (script bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "data", "action") and v]


def refs_of(page: str) -> Refs:
    parser = Refs()
    parser.feed(page)
    return parser


def test_probe_run_page_is_self_contained_with_every_state_and_its_numbers(tmp_path: Path) -> None:
    probe_run = write_probe_run(tmp_path)
    path = write_report(probe_run)
    assert path == probe_run / "report.html" and not list(probe_run.glob(".*tmp"))
    page = path.read_text()
    refs = refs_of(page)
    assert refs.refs == []  # no script src, no link href, no image: nothing to fetch
    assert "https://example.org/tiny.txt" in page  # a URL as text in a table is fine: nothing fetches it
    assert page.count(get_plotlyjs()) == 1  # plotly.js inlined once
    sig = Signature.load(probe_run / "signature.npz")
    figures = figures_of(page)
    for i, state in enumerate(sig.real_states):
        heat = figures[f"signature/heatmap/{state}"].data[0]
        assert list(heat.x) == SYMBOLS and list(heat.y) == [str(lag) for lag in LAGS]
        recall = 100 * sig.recall[i]
        assert heat.z[1][2] == round(float(recall[1, 2]), 2)  # the value itself, in the page's JSON
        assert f"{round(float(recall[1, 2]), 2)}" in page
        assert all(row[SYMBOLS.index("q")] is None for row in heat.z)  # below min_support: no estimate
        assert "no estimate" in heat.text[0][SYMBOLS.index("q")]
    curves = figures["signature/marginal"]
    names = [t.name for t in curves.data]
    assert names == [*STATES, *(f"random:{s}" for s in STATES), *(f"shuffled:{s}" for s in STATES), "majority class"]
    np.testing.assert_allclose(curves.data[0].y, np.round(100 * sig.accuracy[0], 2))
    for text in (
        "Model and data",
        "CharLM (cell lstm, num_layers 2, hidden_size 32, embedding_size 8)",
        sig.meta["checkpoint_sha256"],
        "file matches",
        "tinyshakespeare",
        "4.413",
        "12,345",
        "Noise floor",
        "<td>layer2.c</td><td>0.012</td>",
    ):
        assert text in page, text


def test_heatmap_colours_are_those_of_the_static_figures(tmp_path: Path) -> None:
    probe_run = write_probe_run(tmp_path)
    sig = Signature.load(probe_run / "signature.npz")
    fig = build_report(probe_run).figures["signature/heatmap/layer1.c"]
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmax) == (0, 100)
    static = next(im for ax in signature_heatmap(sig, "layer1.c").axes for im in ax.images)
    assert (static.norm.vmin, static.norm.vmax) == (0, 100)
    for at, colour in axis.colorscale:
        assert colour == matplotlib.colors.to_hex(static.get_cmap()(at))
    diff = difference_map(sig, sig, "layer1.c", "layer2.c").axes[0].images[0].get_cmap()
    assert diff.name.startswith(DIFFERENCE_CMAP)
    assert [c for _, c in colorscale(DIFFERENCE_CMAP)][::10] == [
        matplotlib.colors.to_hex(diff(x)) for x in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]


def test_train_run_page_shows_each_signature_and_the_perplexities(tmp_path: Path) -> None:
    train_run = write_train_run(tmp_path / "train", variants=("deep_decoders",))
    page = write_report(train_run).read_text()
    keys = list(figures_of(page))
    for name in ("main", "deep_decoders"):
        assert f"Signature &#x27;{name}&#x27;" in page
        assert [k for k in keys if k.startswith(f"{name}/")] == [f"{name}/heatmap/{s}" for s in STATES] + [
            f"{name}/marginal"
        ]
    assert "<td>test</td><td>4.413</td><td>2.142</td>" in page
    assert "State gradients" not in page


def test_gradients_section_when_the_run_has_them(tmp_path: Path) -> None:
    probe_run = write_probe_run(tmp_path)
    sig = Signature.load(probe_run / "signature.npz")
    write_gradients(probe_run, sig)
    from memsig.analysis.state_gradients import GradientMemory

    grad = GradientMemory.load(probe_run / "gradients.npz")
    page = write_report(probe_run).read_text()
    figures = figures_of(page)
    assert "State gradients" in page
    np.testing.assert_allclose(figures["gradients/decay"].data[1].y, grad.decay()[1], rtol=1e-5)
    assert len(figures["gradients/spectra"].data) == len(STATES) * len(LAGS)
    for state in STATES:
        assert figures[f"gradients/map/{state}"].data[0].z[0][SYMBOLS.index("q")] is None  # too few positions
    rho = grad.meta["correlation"]["layer1.c"]["across_lags"]
    assert f"<td>{round(rho, 3)}</td>" in page


@dataclass
class StubGradients:
    """Only the attributes the report reads (the GradientMemory interface)."""

    states: list[str]
    lags: list[int]
    symbols: list[str]
    singular_values: np.ndarray
    symbol_norm: np.ndarray
    support: np.ndarray
    meta: dict

    def decay(self, k: int = 5) -> np.ndarray:
        return np.nansum(self.singular_values[..., :k], -1)


def test_gradient_figures_need_only_the_interface() -> None:
    s, k, c = 1, 3, 2
    svals = np.array([[[2.0, 1.0, np.nan], [1.0, 0.5, np.nan], [0.5, 0.1, np.nan]]])
    stub = StubGradients(["h"], [1, 2, 3], ["a", "b"], svals, np.full((s, k, c), 0.5), np.full((s, k, c), 9), {})
    assert gradient_decay(stub, k=2).data[0].y == (3.0, 1.5, 0.6)
    assert singular_spectra(stub).data[0].y == (2.0, 1.0, None)
    assert list(gradient_map(stub, "h").data[0].customdata[0]) == [0.5, 0.5]


def test_multirun_page_has_models_side_by_side_differences_and_distances(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    page = write_report(sweep, StudySettings(n_boot=50)).read_text()
    assert refs_of(page).refs == []
    figures = figures_of(page)
    assert list(figures) == ["study/marginal", "study/memory", "study/side_by_side", "study/differences"]
    side = figures["study/side_by_side"]
    assert [t.name for t in side.data] == ["32", "64"]
    assert [a.text for a in side.layout.annotations] == ["32 — layer1.c", "64 — layer1.c"]
    assert figures["study/differences"].data[0].name == "32 − 64"
    (row,) = Study.from_sweep(sweep, StudySettings(n_boot=50)).distance_rows()
    assert "Signature distances" in page
    assert (
        f"<tr><td>32</td><td>64</td><td>{row['distance']}</td><td>{row['low']}</td><td>{row['high']}</td>"
        "<td>1 2 3 4 5 6</td><td></td></tr>" in page  # measured on every lag, none left out
    )
    assert "<th>model</th><th>params</th>" in page and "<td>12345</td>" in page


def test_the_study_report_shares_the_collection_and_distances(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    write_static(Study.from_sweep(sweep, StudySettings(n_boot=50)), sweep / "report", ("png",))
    table = (sweep / "report" / "distances.csv").read_text().splitlines()
    (row,) = Study.from_sweep(sweep, StudySettings(n_boot=50)).distance_rows()
    assert table[1] == f"32,64,{row['distance']},{row['low']},{row['high']},1 2 3 4 5 6,"


def test_the_study_callback_gives_its_settings_to_the_interactive_page(tmp_path: Path) -> None:
    """Title, model names and difference pairs of the StudyReport callback reach both pages."""
    from omegaconf import OmegaConf

    from memsig.tasks.hydra_callbacks import StudyReport

    sweep = write_sweep(tmp_path)
    callback = StudyReport(
        title="Hidden-size study",
        label=["experiment", "model.hidden_size"],
        differences=[["toy-64", "toy-32"]],
        formats=["png"],
    )
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    static = (sweep / "report" / "report.md").read_text()
    assert "Hidden-size study" in static and "difference_toy-64_vs_toy-32" in static
    by_command = tmp_path / "by_command.html"
    (sweep / "report.html").rename(by_command)
    shutil.rmtree(sweep / "report")
    assert (
        main(
            [
                str(sweep),
                "--title",
                "Hidden-size study",
                "--label",
                "experiment",
                "model.hidden_size",
                "--difference",
                "toy-64",
                "toy-32",
                "--n-boot",
                "20",
                "--static",
            ]
        )
        == 0
    )  # the command line, the same settings, both pages
    before_distances = "## Signature distances"  # their intervals depend on --n-boot
    assert (sweep / "report" / "report.md").read_text().split(before_distances)[0] == static.split(before_distances)[0]
    for page in (by_command.read_text(), (sweep / "report.html").read_text()):
        assert "<title>Hidden-size study</title>" in page and "memsig study" not in page
        figures = figures_of(page)
        assert [t.name for t in figures["study/side_by_side"].data] == ["toy-32", "toy-64"]
        assert [t.name for t in figures["study/differences"].data] == ["toy-64 − toy-32"]  # the pair asked, in order


def test_a_dir_without_signature_says_what_it_should_hold(tmp_path: Path, capsys) -> None:
    train_run = write_train_run(tmp_path / "train", variants=("deep_decoders",))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"signature\.npz.*python probe\.py ckpt=") as err:
        write_report(tmp_path / "empty")
    assert "python train.py -m" in str(err.value)
    for p in (train_run / "signatures").glob("*.npz"):
        p.unlink()
    with pytest.raises(ReportError, match=f"train run {train_run} has metrics.json but no signatures"):
        write_report(train_run)
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_command_line_writes_the_page(tmp_path: Path, capsys) -> None:
    probe_run = write_probe_run(tmp_path)
    assert main([str(probe_run)]) == 0
    assert f"report: {probe_run / 'report.html'}" in capsys.readouterr().out
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "report.py"), str(probe_run / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "a report needs one of" in done.stderr and "Traceback" not in done.stderr
