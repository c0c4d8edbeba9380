"""The package's layering, read from the source (every import, at module level or inside a function):

- xvae_fast.evaluation never imports xvae_fast.training: evaluation loads runs through
  xvae_fast.run_loading and checkpoint_file, below both;
- xvae_fast.training imports from xvae_fast.evaluation only its metric units
  (xvae_fast.evaluation.units: the cluster modes, the 2-D histograms, the headline's Fréchet
  distance), so no metric is computed in two places;
- nothing evaluation imports, however indirectly, is training, and none of it imports evaluation at
  module level: there is no import cycle between the two."""
import ast
import os
import subprocess
import sys
from typing import Dict, Set, Tuple

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xvae_fast")
METRIC_UNITS = "xvae_fast.evaluation.units"


def _modules() -> Dict[str, Tuple[str, bool]]:
    """{dotted name: (path, is a package)} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3].split(os.sep)
                package = rel[-1] == "__init__"
                found[".".join(rel[:-1] if package else rel)] = (os.path.join(folder, f), package)
    return found


MODULES = _modules()


def _imports(name: str) -> Tuple[Set[str], Set[str]]:
    """(modules of the package that `name` imports anywhere, those it imports at module level)."""
    path, package = MODULES[name]
    base = name if package else name.rpartition(".")[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    top = {id(n) for n in _outside_functions(tree)}
    every, module_level = set(), set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = node.module or ""
            if node.level:
                up = base.split(".")[:len(base.split(".")) - node.level + 1]
                parent = ".".join(up + ([node.module] if node.module else []))
            targets = [parent] + [f"{parent}.{a.name}" for a in node.names]
        for t in targets:
            if t in MODULES:
                every.add(t)
                if id(node) in top:
                    module_level.add(t)
    return every, module_level


def _outside_functions(tree) -> list:
    """The nodes executed when the module is imported (not inside a function body)."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def _with_parents(names: Set[str]) -> Set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too."""
    out = set()
    for n in names:
        parts = n.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out & set(MODULES)


def _under(package: str):
    return sorted(m for m in MODULES if m == package or m.startswith(package + "."))


def test_the_source_is_read():
    # the reader finds what it must: a module-level and a function-level import of the package
    every, top = _imports("xvae_fast.evaluation.runner")
    assert "xvae_fast.run_loading" in top and "xvae_fast.evaluation.units" in top
    assert "xvae_fast.evaluation.inception" in every - top
    assert "xvae_fast.training.trainer" in _imports("xvae_fast.training")[1]


def test_evaluation_never_imports_training():
    bad = {m: sorted(t for t in _with_parents(_imports(m)[0]) if t.startswith("xvae_fast.training"))
           for m in _under("xvae_fast.evaluation")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_training_imports_evaluation_only_through_the_metric_units():
    seen = {m: sorted(t for t in _imports(m)[0] if t.startswith("xvae_fast.evaluation"))
            for m in _under("xvae_fast.training")}
    assert {m: t for m, t in seen.items() if set(t) - {METRIC_UNITS, "xvae_fast.evaluation"}} == {}
    assert {t for ts in seen.values() for t in ts} == {METRIC_UNITS}      # the declared route is used


def test_what_evaluation_imports_does_not_import_it_back():
    reached, todo = set(), list(_under("xvae_fast.evaluation"))
    while todo:                      # everything evaluation may import, at any depth
        m = todo.pop()
        for t in _with_parents(_imports(m)[0] | {m}) - reached:
            reached.add(t)
            todo.append(t)
    below = reached - set(_under("xvae_fast.evaluation"))
    assert "xvae_fast.run_loading" in below and "xvae_fast.checkpoint_file" in below
    assert sorted(m for m in below if m.startswith("xvae_fast.training")) == []
    back = {m: sorted(t for t in _imports(m)[1] if t.startswith("xvae_fast.evaluation")) for m in below}
    assert {m: t for m, t in back.items() if t} == {}


def test_importing_evaluation_loads_no_training_module(tmp_path):
    code = ("import pkgutil, importlib, sys, xvae_fast.evaluation as ev\n"
            "for m in pkgutil.iter_modules(ev.__path__): importlib.import_module('xvae_fast.evaluation.' + m.name)\n"
            "import xvae_fast.run_loading, xvae_fast.checkpoint_file\n"
            "print(sorted(m for m in sys.modules if m.startswith('xvae_fast.training')))")
    # the xvae_fast the tests import (the environment's), from a folder that holds no other
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


COMMANDS = {"xvae_fast.train", "xvae_fast.sample", "xvae_fast.evaluate", "xvae_fast.compare",
            "xvae_fast.export"}


def _reaches(m: str, forbidden) -> list:
    return sorted(t for t in _with_parents(_imports(m)[0]) if forbidden(t))


def test_the_op_api_imports_nothing_above_it():
    """xvae_fast.ops (the fused ops, their references and argument types) stands on the compiled
    extension and the error types alone."""
    allowed = {"xvae_fast", "xvae_fast._C", "xvae_fast.errors"}
    bad = {m: _reaches(m, lambda t: not t.startswith("xvae_fast.ops") and t not in allowed)
           for m in _under("xvae_fast.ops")}
    assert {m: t for m, t in bad.items() if t} == {}
    assert _under("xvae_fast.ops") and "xvae_fast.ops.functional" in MODULES


def test_models_and_data_import_no_layer_above_them():
    """models/ and data/ never import the trainer, the evaluation, the experiments, the run-level
    modules or the commands (nor the config, which sits above the models whose options it gathers)."""
    above = ("xvae_fast.training", "xvae_fast.evaluation", "xvae_fast.experiments", "xvae_fast.config",
             "xvae_fast.run_loading", "xvae_fast.trained")
    bad = {m: _reaches(m, lambda t: any(t == a or t.startswith(a + ".") for a in above) or t in COMMANDS)
           for m in _under("xvae_fast.models") + _under("xvae_fast.data")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_library_layer_imports_a_command():
    """The commands (python -m xvae_fast.train, sample, evaluate, compare, export) sit on top: only
    the experiments' runners and other commands call them."""
    library = [m for m in MODULES if m not in COMMANDS and not m.startswith("xvae_fast.experiments")]
    bad = {m: _reaches(m, lambda t: t in COMMANDS) for m in library}
    assert {m: t for m, t in bad.items() if t} == {}
