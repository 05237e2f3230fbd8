"""The example notebook is valid, stored without outputs, and runs end to end on a trained tiny LM."""

from __future__ import annotations

import ast
import io
import json
import re
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from memsig.resolvers import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "examples" / "probe_api.ipynb"


def code_cells() -> list[dict[str, Any]]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5, (nb["nbformat"], nb["nbformat_minor"])
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source_of(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def run_cell(source: str, namespace: dict[str, Any]) -> list[Figure]:
    """Execute a cell as Jupyter would; a Figure left as its last expression is rendered (to PNG), as displayed."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is None:
        return []
    shown = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
    if not isinstance(shown, Figure):
        return []
    shown.savefig(io.BytesIO(), format="png")
    return [shown]


def test_notebook_is_nbformat_4_without_outputs_and_parameterised() -> None:
    cells = code_cells()
    assert len(cells) > 5
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)
    params = cells[0]
    assert "parameters" in params["metadata"].get("tags", [])
    assert {m for m in re.findall(r"^(\w+) = ", source_of(params), re.M)} == {"CKPT", "MAX_CHARS"}
    for cell in cells[1:]:
        compile(source_of(cell), "<cell>", "exec")  # plain Python: no magics outside the parameters cell


def test_notebook_runs_on_a_trained_lm(one_thread: None, trained_lm: dict) -> None:
    matplotlib.use("Agg")
    namespace: dict[str, Any] = {"CKPT": str(trained_lm["result"]["best_checkpoint"]), "MAX_CHARS": 10_000}
    figures = [fig for cell in code_cells()[1:] for fig in run_cell(source_of(cell), namespace)]
    assert len(figures) == 5
    sig, quick, hooked = namespace["sig"], namespace["quick"], namespace["hooked"]
    assert sig.states == quick.states == ["layer1.c"] and sig.forward_recall is not None
    assert sig.lags == list(range(1, 11)) and quick.lags == list(range(1, 21))
    assert np.isfinite(sig.accuracy).all() and np.isfinite(quick.accuracy).all()
    lag1 = quick.accuracy[0, 0]  # the MLP probe trains on only a few batches here; ridge needs no training
    assert lag1 > quick.majority_rate[0, 0] + 0.3, (lag1, quick.majority_rate[0, 0])
    assert 0 <= namespace["low"] <= namespace["high"] <= 1 and np.isfinite(namespace["near"])
    assert hooked.states == ["gru", "lstm"]
