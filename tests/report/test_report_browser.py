"""The report in a real headless browser: no console errors, every figure drawn, a non-blank screenshot.

Needs chromium (or Chrome): without one the tests fail, naming the install (``make setup`` installs it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from memsig.probe.signature import Signature
from memsig.report import StudySettings, write_report

import system_deps
from conftest import require_system
from report_helpers import write_gradients, write_probe_run, write_sweep


@pytest.fixture(scope="module")
def browser() -> str:
    require_system("chromium")
    return system_deps.browser()


def run_browser(browser: str, page: Path, work: Path, *action: str) -> subprocess.CompletedProcess:
    """Open ``page`` headless with ``action`` (``--dump-dom`` or ``--screenshot=...``); stdout and the log."""
    command = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--window-size=1200,2000",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={work / 'profile'}",
        *action,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def console_errors(log: str) -> list[str]:
    """Console messages in the browser's log that are errors (uncaught exceptions, console.error)."""
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Error" in line or ":ERROR:CONSOLE" in line)
    ]


def figure_ids(page: Path) -> list[str]:
    return re.findall(r'<div id="(fig-[^"]+)" class="memsig-plot">', page.read_text())


def drawn(dom: str, ids: list[str]) -> dict[str, str]:
    """Figure id -> the DOM between its div and its data block (where plotly draws)."""
    out = {}
    for fig_id in ids:
        start = dom.index(f'id="{fig_id}"')
        out[fig_id] = dom[start : dom.index(f'data-for="{fig_id}"', start)]
    return out


def test_the_error_detector_sees_a_console_error(browser: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><p>x</p><script>undefinedFunction();</script>")
    assert console_errors(run_browser(browser, page, tmp_path, "--dump-dom").stderr)


def test_probe_run_page_renders_every_figure(browser: str, tmp_path: Path) -> None:
    probe_run = write_probe_run(tmp_path)
    write_gradients(probe_run, Signature.load(probe_run / "signature.npz"))
    page = write_report(probe_run)
    ids = figure_ids(page)
    assert len(ids) == 2 + 1 + 2 + 2 + 2  # heatmaps, recall curves, baseline + lift, gradient decay + spectra, maps
    dom = run_browser(browser, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    for fig_id, html in drawn(dom.stdout, ids).items():
        assert 'class="main-svg"' in html, f"{fig_id} was not drawn"
        if "heatmap" in fig_id or "map" in fig_id:
            assert 'class="hm"' in html, f"{fig_id} has no heatmap layer"
        else:
            assert 'class="scatterlayer' in html and "trace scatter" in html, f"{fig_id} has no curves"

    png = tmp_path / "page.png"
    shot = run_browser(browser, page, tmp_path, f"--screenshot={png}")
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    assert not console_errors(shot.stderr), console_errors(shot.stderr)
    image = imread(png)[..., :3]
    assert image.shape[:2] == (2000, 1200)
    assert image.var() > 0.01  # not blank
    purple = (image[..., 2] > image[..., 1] + 0.25) & (image[..., 0] < 0.5)  # dark cells of a recall heatmap
    assert purple.sum() > 500


def test_multirun_page_renders_every_figure(browser: str, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    page = write_report(sweep, StudySettings(n_boot=20))
    ids = figure_ids(page)
    dom = run_browser(browser, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and not console_errors(dom.stderr), dom.stderr[-2000:]
    html = drawn(dom.stdout, ids)
    assert all('class="main-svg"' in h for h in html.values())
    assert html[ids[1]].count('class="point"') == 2  # memory against perplexity: one point per model
    assert html[ids[2]].count('class="hm"') == 2  # side by side: one heatmap per model
    assert html[ids[3]].count('class="hm"') == 1  # the difference map of the one pair


def test_memory_beyond_inference_figures_render(browser: str, tmp_path: Path) -> None:
    page = write_report(write_probe_run(tmp_path, conditional=True))
    ids = [fig_id for fig_id in figure_ids(page) if "conditional" in fig_id]
    assert len(ids) == 1 + 2  # the bits per lag, a map per real state
    dom = run_browser(browser, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    html = drawn(dom.stdout, ids)
    curves, *maps = ids
    assert 'class="main-svg"' in html[curves] and "trace scatter" in html[curves], f"{curves} has no curves"
    assert html[curves].count("js-fill") >= 2, "the interval bands were not drawn"
    for fig_id in maps:
        assert 'class="hm"' in html[fig_id], f"{fig_id} has no heatmap layer"
        assert "bits beyond inference" in html[fig_id], f"{fig_id} has no colour bar title"
