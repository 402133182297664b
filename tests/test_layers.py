"""The import rule of the package: a module imports only from its own layer or lower ones.

Layers, lowest first (README, "Layout"): plain data and helpers; the config; environments and the
replay buffer; models and losses; the agent; training; what is built on training (viz, analysis,
launch); the command line. Imports inside functions count too: a lazy import is still a dependency.
And no two modules import each other, directly or through others: a circle makes each half of it
unreadable without the other and breaks as soon as one side imports the other at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import twm

PACKAGE = Path(twm.__file__).parent

LAYERS: dict[str, int] = {
    "twm": 0,  # __init__: the version
    "twm.version": 0,
    "twm.games": 0,
    "twm.presets": 0,
    "twm.seeding": 0,
    "twm.device": 0,
    "twm.run_dir": 0,
    "twm.allocator": 0,
    "twm.files": 0,
    "twm.config": 1,
    "twm.config_files": 1,
    "twm.envs": 2,
    "twm.replay": 2,
    "twm.models": 3,
    "twm.losses": 3,
    "twm.imagination": 4,
    "twm.acting": 4,
    "twm.captured": 4,
    "twm.update": 4,
    "twm.agent": 4,
    "twm.perf": 4,  # instruments: bench, info
    "twm.perf.op_count": 0,
    "twm.perf.flops": 3,
    "twm.training": 5,
    "twm.viz": 6,
    "twm.analysis": 6,
    "twm.launch": 6,
    "twm.cli_parser": 7,
    "twm.cli": 7,
    "twm.api": 7,  # the Python API (twm.train, twm.load): beside the command line
}

# The one allowed upward import: the package's lazy ``__getattr__`` forwards twm.train and twm.load
# to twm.api on first use (``import twm`` itself imports nothing of it).
LAZY_FORWARDS = {("twm", "twm.api")}


def layer_of(module: str) -> int:
    """The layer of ``module``: that of its longest listed prefix."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return LAYERS[name]
    raise KeyError(f"{module} is in no layer: add its package to LAYERS")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def twm_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a twm module in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "twm"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("twm"):
            module = str(node.module)
            # "from twm import cli" imports twm.cli; "from twm.x import name" imports twm.x.
            subs = [f"{module}.{a.name}" for a in node.names] if module == "twm" else [module]
            out += [(node.lineno, m) for m in subs]
    return out


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in twm_imports(path):
            if imported.split(".")[-1] == "__version__":
                imported = "twm"
            if (importer, imported) in LAZY_FORWARDS:
                continue
            if layer_of(imported) > layer_of(importer):
                found.append(f"{importer}:{line} imports {imported}")
    return found


def module_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imported twm modules. ``from twm.pkg import mod`` names the module ``twm.pkg.mod``
    when that is a module; an imported package counts as its ``__init__``."""
    graph: dict[str, set[str]] = {}
    for importer, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                edges |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        graph[importer] = {m for m in edges if m in modules and m != importer}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(circles)


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_module_imports_a_higher_layer() -> None:
    assert violations() == []


def test_import_twm_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, twm; print(sorted(m for m in sys.modules if m.startswith(('twm', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['twm', 'twm.version']"  # no torch, no submodule beyond the version
    assert callable(twm.train) and callable(twm.load)  # forwarded to twm.api on first use


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from twm.training.trainer import Trainer\n")
    assert twm_imports(bad) == [(2, "twm.training.trainer")]
    assert layer_of("twm.training.trainer") > layer_of("twm.models.dynamics")


def test_no_two_modules_import_each_other() -> None:
    assert import_circles(import_graph(module_files())) == []


def test_the_check_sees_a_circle(tmp_path: Path) -> None:
    files = {"twm.a": tmp_path / "a.py", "twm.b": tmp_path / "b.py", "twm.c": tmp_path / "c.py"}
    files["twm.a"].write_text("from twm.b import f\n")
    files["twm.b"].write_text("def f():\n    from twm import c\n")  # a lazy import counts
    files["twm.c"].write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from twm.a import g\n")
    graph = import_graph(files)
    assert graph == {"twm.a": {"twm.b"}, "twm.b": {"twm.c"}, "twm.c": {"twm.a"}}
    assert import_circles(graph) == [["twm.a", "twm.b", "twm.c"]]
    files["twm.c"].write_text("")
    assert import_circles(import_graph(files)) == []
