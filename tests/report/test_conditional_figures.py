"""Memory beyond inference (Signature.conditional_bits) in figures: the spec, the static figure
the probe task writes, and its section of the report page."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from memsig.plots import conditional_memory, save_figure, specs
from memsig.plots.interactive import colorscale
from memsig.probe.signature import Signature
from memsig.report import write_report
from memsig.report.page import figures_of

from report_helpers import (
    LAGS,
    STATES,
    SYMBOLS,
    conditional_bits_per_lag,
    make_signature,
    with_conditional,
    write_probe_run,
    write_train_run,
)

CONTROLS = [f"shuffled:{s}" for s in STATES]


def test_the_spec_holds_the_signatures_bits_and_one_symmetric_scale() -> None:
    sig = with_conditional(make_signature())
    spec = specs.conditional(sig)
    assert [c.name for c in spec.curves.curves] == [*STATES, *CONTROLS]
    assert [c.dash for c in spec.curves.curves] == ["solid", "solid", "dashdot", "dashdot"]
    assert spec.curves.curves[0].colour == spec.curves.curves[2].colour  # a control in its state's colour
    assert [m.name for m in spec.maps] == STATES  # maps of the real states only
    top = 0.0
    for state, curve, heatmap in zip(STATES, spec.curves.curves, spec.maps):
        bits = sig.conditional_bits(state)
        np.testing.assert_allclose(bits["bits"], conditional_bits_per_lag(state), rtol=0.01)  # what was built in
        np.testing.assert_array_equal(curve.y, bits["bits"])
        np.testing.assert_array_equal(curve.low, bits["low"])
        np.testing.assert_array_equal(curve.high, bits["high"])
        assert curve.band and (curve.high > curve.low).all()
        np.testing.assert_array_equal(heatmap.values, bits["cells"])
        assert np.isnan(heatmap.values[:, SYMBOLS.index("q")]).all()  # too few positions
        assert "no estimate" in heatmap.hover[0][SYMBOLS.index("q")]
        assert spec.totals[state] == (bits["total"], bits["total_low"], bits["total_high"])
        top = max(top, float(np.nanmax(np.abs(bits["cells"]))))
    (scale,) = {m.scale for m in spec.maps}
    assert scale.cmap == specs.DIFFERENCE_CMAP and scale.vmin == -scale.vmax == pytest.approx(-top)
    assert scale.label == "bits beyond inference"
    assert specs.total_text("layer1.c", *spec.totals["layer1.c"]) in spec.notes


def test_a_signature_without_given_decoders_has_no_conditional_spec() -> None:
    sig = make_signature()
    assert sig.given_states == []
    with pytest.raises(ValueError, match="no memory beyond inference"):
        specs.conditional(sig)


def test_static_figure_curves_bands_and_maps(tmp_path: Path) -> None:
    sig = with_conditional(make_signature())
    fig = conditional_memory(sig)
    curves = fig.axes[0]
    lines = {line.get_label(): line for line in curves.get_lines()}
    assert set(STATES + CONTROLS) <= set(lines)
    np.testing.assert_allclose(lines["layer1.c"].get_ydata(), sig.conditional_bits("layer1.c")["bits"])
    assert lines["shuffled:layer1.c"].get_linestyle() == "-."
    assert len(curves.collections) >= len(STATES)  # the interval bands
    assert curves.get_ylabel() == "bits beyond inference" and curves.get_xlabel() == "lag δ"
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == [f"{s}\nbits of x(t−δ) beyond inference" for s in STATES]
    for ax, state in zip(maps, STATES):
        image = ax.images[0]
        assert image.get_cmap().name.startswith("RdBu_r")
        assert image.norm.vmin == -image.norm.vmax
        values = image.get_array()
        np.testing.assert_allclose(values[:, 0], sig.conditional_bits(state)["cells"][:, 0])
        assert np.ma.getmaskarray(values)[:, SYMBOLS.index("q")].all()
        assert [t.get_text() for t in ax.get_xticklabels()] == SYMBOLS
    assert sum(ax.get_ylabel() == "bits beyond inference" for ax in fig.axes) == 2  # curves and one colourbar
    assert fig.get_suptitle() == "memory beyond inference (bits)"
    assert "layer1.c: 3.62 bits summed over the lags" in fig._supxlabel.get_text()
    assert [p.suffix for p in save_figure(fig, tmp_path / "memory", formats=("png",))] == [".png"]


def test_the_probe_task_writes_the_static_figure_beside_the_others(tmp_path: Path) -> None:
    from memsig.tasks.probe import write_figures

    plain = {p.name for p in write_figures(make_signature(), tmp_path / "plain", ["png"])}
    assert "memory_beyond_inference.png" not in plain
    written = {p.name for p in write_figures(with_conditional(make_signature()), tmp_path / "cond", ["png"])}
    assert written == plain | {"memory_beyond_inference.png"}


def test_report_section_with_curves_totals_and_maps(tmp_path: Path) -> None:
    probe_run = write_probe_run(tmp_path, conditional=True)
    sig = Signature.load(probe_run / "signature.npz")
    page = write_report(probe_run).read_text()
    assert ">Memory beyond inference</h3>" in page
    assert "About 0 means the later symbols explain the recall" in page
    figures = figures_of(page)
    keys = [k for k in figures if "/conditional/" in k]
    assert keys == ["signature/conditional/bits", *(f"signature/conditional/map/{s}" for s in STATES)]
    assert [k for k in figures if k.startswith("signature/heatmap/")] == [f"signature/heatmap/{s}" for s in STATES]
    curves = figures["signature/conditional/bits"]
    traces = {t.name: t for t in curves.data}
    assert [t.name for t in curves.data if t.showlegend is not False] == [*STATES, *CONTROLS]
    assert curves.layout.yaxis.title.text == "bits beyond inference"
    for state in STATES:
        bits = sig.conditional_bits(state)
        np.testing.assert_array_equal(traces[state].y, np.round(bits["bits"], 4))
        np.testing.assert_array_equal(traces[f"{state} interval"].y, np.round(bits["low"], 4))  # the band's lower edge
        assert list(traces[state].x) == LAGS
        assert f"{state}: {bits['total']:.2f} bits summed over the lags [{bits['total_low']:.2f}, " in page
        heat = figures[f"signature/conditional/map/{state}"].data[0]
        assert list(heat.x) == SYMBOLS and list(heat.y) == [str(lag) for lag in LAGS]
        assert heat.z[1][2] == round(float(bits["cells"][1, 2]), 4)
        assert all(row[SYMBOLS.index("q")] is None for row in heat.z)
        assert heat.zmid == 0 and heat.zmin == -heat.zmax
        assert [c for _, c in heat.colorscale] == [c for _, c in colorscale(specs.DIFFERENCE_CMAP)]
        assert heat.colorbar.title.text == "bits beyond inference"
    top = max(float(np.nanmax(np.abs(sig.conditional_bits(s)["cells"]))) for s in STATES)
    assert figures["signature/conditional/map/layer2.c"].data[0].zmax == pytest.approx(top)  # one scale for all
    assert matplotlib.colors.to_hex(matplotlib.colormaps["RdBu_r"](1.0)) == heat.colorscale[-1][1]


def test_no_section_without_given_decoders(tmp_path: Path) -> None:
    page = write_report(write_probe_run(tmp_path)).read_text()
    assert "Memory beyond inference" not in page and "/conditional/" not in "".join(figures_of(page))
    page = write_report(write_train_run(tmp_path / "train")).read_text()
    assert "Memory beyond inference" not in page
