"""Signature figures: saved files, layout, colour scales, masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from memsig.plots import confusion_plot, difference_map, marginal_curves, save_figure, side_by_side, signature_heatmap
from memsig.probe.signature import Signature

SYMBOLS = ["a", "b", "c", "␣"]
LAGS = [1, 2, 3, 4, 5]


def make_signature(memory: int = 3, n: int = 100, rare: str | None = None) -> Signature:
    """Perfect recall up to lag ``memory``, chance (uniform confusion) afterwards; ``rare`` has 5 positions."""
    c = len(SYMBOLS)
    conf = np.zeros((2, len(LAGS), c, c), dtype=np.int64)
    for k, lag in enumerate(LAGS):
        conf[0, k] = n * np.eye(c, dtype=np.int64) if lag <= memory else np.full((c, c), n // c)
    conf[1] = n // c  # a "random:" control at chance
    if rare is not None:
        conf[:, :, SYMBOLS.index(rare)] = conf[:, :, SYMBOLS.index(rare)] * 5 // n
    fwd = 30 * np.eye(c, dtype=np.int64) + 10
    return Signature(
        ["layer1", "random:layer1"], list(LAGS), list(SYMBOLS), conf, np.zeros((2, len(LAGS))), np.full(c, 1 / c), fwd
    )


def main_axes(fig):
    return next(ax for ax in fig.axes if ax.get_xlabel() == "input symbol at t−δ")


def test_heatmap_saves_png_and_svg_of_expected_size(tmp_path: Path) -> None:
    fig = signature_heatmap(make_signature(), "layer1", title="toy")
    width, height = fig.get_size_inches()
    paths = save_figure(fig, tmp_path / "sub" / "heat.v1")
    assert paths == [tmp_path / "sub" / "heat.v1.png", tmp_path / "sub" / "heat.v1.svg"]
    png = imread(paths[0])
    assert png.shape[:2] == (pytest.approx(height * 150, abs=1), pytest.approx(width * 150, abs=1))
    assert png[..., :3].var() > 0
    assert paths[1].read_text().lstrip().startswith("<?xml") and "<svg" in paths[1].read_text()
    assert not list((tmp_path / "sub").glob(".*tmp"))  # no temp files left behind


def test_heatmap_layout_ticks_orientation_and_scale() -> None:
    fig = signature_heatmap(make_signature(), "layer1")
    ax = main_axes(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == SYMBOLS
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(lag) for lag in LAGS]
    assert ax.get_ylabel() == "lag δ"
    bottom, top = ax.get_ylim()
    assert top < bottom  # row 0 (lag 1) at the top
    image = ax.images[0]
    assert (image.norm.vmin, image.norm.vmax) == (0, 100)
    assert image.get_cmap().name.startswith("Purples")
    np.testing.assert_allclose(image.get_array()[:, 0], [100, 100, 100, 25, 25])
    assert fig.get_suptitle() == "layer1"
    assert any(ax.get_yticklabels() and ax.get_yticklabels()[0].get_text() == "forward" for ax in fig.axes)
    assert any(ax.get_ylabel() == "recall (%)" for ax in fig.axes)  # the colourbar


def test_heatmap_masks_low_support_cells_and_says_so() -> None:
    fig = signature_heatmap(make_signature(rare="b"), "layer1")
    mask = np.ma.getmaskarray(main_axes(fig).images[0].get_array())
    assert mask[:, 1].all() and not mask[:, [0, 2, 3]].any()
    assert "fewer than 20" in fig._supxlabel.get_text()


def test_marginal_curves_styles() -> None:
    fig = marginal_curves({"A": make_signature(), "B": make_signature(memory=1)})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"A: layer1", "A: random:layer1", "B: layer1", "B: random:layer1", "majority class"}
    np.testing.assert_allclose(lines["B: layer1"].get_ydata(), [100, 25, 25, 25, 25])
    assert lines["A: layer1"].get_linestyle() == "-" and lines["A: random:layer1"].get_linestyle() == "--"
    assert lines["A: layer1"].get_color() == lines["A: random:layer1"].get_color()
    assert lines["majority class"].get_linestyle() == ":"
    single = marginal_curves(make_signature(), states=["layer1"])
    assert [line.get_label() for line in single.axes[0].get_lines()] == ["layer1", "majority class"]


def test_difference_map_symmetric_scale_and_sign() -> None:
    better, worse = make_signature(memory=3, rare="c"), make_signature(memory=1)
    fig = difference_map(better, worse, "layer1", labels=("GRU", "5-gram"))
    ax = fig.axes[0]
    image = ax.images[0]
    assert image.norm.vmin == -image.norm.vmax == -75
    values = image.get_array()
    assert values[1, 0] == 75 and values[0, 0] == 0  # lag 2: first remembers, second at chance
    assert np.ma.getmaskarray(values)[:, 2].all()  # NaN in the first -> masked
    red, _, blue, _ = image.cmap(image.norm(values[1, 0]))
    assert red > 0.4 > blue  # first better -> red end
    assert any(a.get_ylabel() == "recall GRU − 5-gram (points)" for a in fig.axes)


def test_confusion_plot_row_normalised() -> None:
    fig = confusion_plot(make_signature(), "layer1", 4)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array().sum(-1), 100)
    assert [t.get_text() for t in ax.get_yticklabels()] == SYMBOLS
    with pytest.raises(ValueError, match="lag 9"):
        confusion_plot(make_signature(), "layer1", 9)


def test_side_by_side_shares_one_scale(tmp_path: Path) -> None:
    fig = side_by_side({"A": make_signature(), "B": make_signature(memory=1)}, {"A": "layer1", "B": "random:layer1"})
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2 and [ax.get_title() for ax in heatmaps] == ["A\nlayer1", "B\nrandom:layer1"]
    assert {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in heatmaps} == {(0, 100)}
    assert sum(ax.get_ylabel() == "recall (%)" for ax in fig.axes) == 1
    assert [p.suffix for p in save_figure(fig, tmp_path / "sbs", formats=("png",))] == [".png"]
