"""The import contract: memsig's layers import one way (docs/design.md, "Layers"), and
``import memsig`` stays light."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from memsig.resolvers import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
# Lowest first; a module may import from its own layer and the layers below. A module belongs to
# the layer of the longest name here that is a prefix of its own.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        ("memsig", "memsig.vocab", "memsig.states", "memsig.resolvers", "memsig.data.io", "memsig.probe.signature"),
    ),
    ("data", ("memsig.data",)),
    ("models", ("memsig.models", "memsig.adapters")),
    ("probe", ("memsig.probe", "memsig.api")),
    ("analysis", ("memsig.analysis",)),
    ("output", ("memsig.plots", "memsig.report", "memsig.export")),
    ("tasks", ("memsig.tasks",)),
]


def modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in (src / "memsig").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def layer_of(module: str) -> int:
    prefixes = [
        (len(p), i) for i, (_, names) in enumerate(LAYERS) for p in names if module == p or module.startswith(p + ".")
    ]
    return max(prefixes)[1]


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The memsig modules ``name`` imports anywhere in its file (function bodies too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:  # ``from a.b import c`` runs ``a.b`` (its package init) as well as ``a.b.c``
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def upward_imports(src: Path) -> list[str]:
    """``a (layer) imports b (layer)`` for every import of a higher layer."""
    known = modules(src)
    return sorted(
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, path in known.items()
        for target in imports(name, path, known)
        if layer_of(target) > layer_of(name)
    )


def import_cycles(src: Path) -> list[list[str]]:
    """Every set of modules that import each other in a circle (package inits included), each sorted:
    the strongly connected components of the import graph with more than one module."""
    known = modules(src)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in order:
            visit(name)
    return sorted(cycles)


def test_layers_import_one_way():
    assert upward_imports(SRC) == []


def test_no_import_cycles():
    assert import_cycles(SRC) == []


def test_the_contract_catches_a_package_init_cycle(tmp_path):
    """A module that imports a sibling through its package's init, while that init imports the
    module: ``plots`` -> ``plots.static`` -> ``plots``, the cycle a merge once brought in."""
    shutil.copytree(SRC / "memsig", tmp_path / "memsig")
    static = tmp_path / "memsig" / "plots" / "static.py"
    static.write_text(static.read_text(encoding="utf-8") + "\nfrom memsig.plots import specs as _specs\n")
    assert ["memsig.plots", "memsig.plots.gradients", "memsig.plots.static"] in import_cycles(tmp_path)


def test_the_contract_catches_an_upward_import(tmp_path):
    shutil.copytree(SRC / "memsig", tmp_path / "memsig")
    vocab = tmp_path / "memsig" / "vocab.py"
    vocab.write_text(vocab.read_text(encoding="utf-8") + "\n\ndef _late():\n    from memsig.tasks import train\n")
    added = set(upward_imports(tmp_path)) - set(upward_imports(SRC))
    assert added == {
        "memsig.vocab (core) imports memsig.tasks (tasks)",  # the package init runs too
        "memsig.vocab (core) imports memsig.tasks.train (tasks)",
    }


def test_design_doc_lists_the_contracts_layers():
    design = (PROJECT_ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w[\w ,]*) \|", section, flags=re.M)
    assert rows[1:] == [name for name, _ in LAYERS] + ["entry points"]  # rows[0]: the header


def test_import_memsig_loads_no_lightning():
    code = "import memsig, sys; print('lightning' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
