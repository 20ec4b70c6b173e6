"""One-way layers: a condsim module may import modules of its own layer or lower ones only.

Every ``import condsim.x`` / ``from condsim.x import y`` / relative import anywhere in a
module (module level, inside functions and methods, under ``if TYPE_CHECKING``) counts.
Loading modules by name through ``importlib`` (the registry's builtin models and
benchmarks) is not an import statement and is allowed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "condsim"

#: bottom to top; a module may import its own layer or a lower one. ``cli`` is the top
#: layer's last step: nothing in the library imports the command line (``training.launch``
#: names its entry point as a string, loaded in the submitit task).
LAYERS = ["base", "data", "synthetic", "models", "cache", "search", "metrics", "results", "top",
          "cli"]

#: every module of the package: a top-level module by its name, a subpackage's modules
#: through the subpackage's name
LAYER_OF = {
    "condsim": "base",
    "condsim.io": "base",
    "condsim.errors": "base",
    "condsim.paths": "base",
    "condsim.progress": "base",
    "condsim.types": "base",
    "condsim.registry": "base",
    "condsim.data": "data",
    "condsim.synthetic": "synthetic",
    "condsim.models": "models",
    "condsim.cache": "cache",
    # encodes each rank's share through the embedding cache (cache.encode's driver)
    "condsim.distributed": "cache",
    "condsim.search": "search",
    "condsim.metrics": "metrics",
    "condsim.results": "results",
    "condsim.benchmarks": "top",
    "condsim.training": "top",
    "condsim.compat": "top",
    "condsim.suite": "top",
    "condsim.demo": "top",
    "condsim.cli": "cli",
}


def module_name(path: Path, src: Path = SRC) -> tuple[str, bool]:
    """The dotted name of the module at ``path`` and whether it is a package ``__init__``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def layer_of(module: str) -> str | None:
    """The layer of ``module`` (or of the module a name inside it belongs to), else None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if module in LAYER_OF:
        return LAYER_OF[module]
    if len(parts) > 2 and ".".join(parts[:2]) in LAYER_OF:  # a subpackage's module
        return LAYER_OF[".".join(parts[:2])]
    return None


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, target)`` for every condsim module imported anywhere in ``tree``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            if target == PACKAGE or (node.module is None and node.level):
                # ``from condsim import x`` / ``from . import x``: x may be a module
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target


def check(src: Path = SRC) -> tuple[list[str], list[str]]:
    """(modules without a layer, upward imports as ``file:line -> target``) under ``src``."""
    unassigned, upward = [], []
    rank = {name: i for i, name in enumerate(LAYERS)}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        module, is_package = module_name(path, src)
        own = layer_of(module)
        if own is None:
            unassigned.append(module)
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported_modules(tree, module, is_package):
            # ``from condsim.x import name``: name is a module or an attribute of condsim.x
            layer = layer_of(target) or layer_of(target.rpartition(".")[0])
            if layer is None:
                unassigned.append(f"{target} (imported at {path.relative_to(src)}:{line})")
            elif rank[layer] > rank[own]:
                upward.append(f"{path.relative_to(src)}:{line} -> {target} "
                              f"({own} imports {layer})")
    return unassigned, upward


def test_every_module_has_a_layer_and_no_import_goes_up() -> None:
    unassigned, upward = check()
    assert not unassigned, "modules without a layer in LAYER_OF:\n" + "\n".join(unassigned)
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_checker_catches_upward_imports_in_every_form(tmp_path: Path) -> None:
    """The check cannot silently pass: a fake package with one upward import per form."""
    _write(tmp_path, "condsim/__init__.py", "")
    _write(tmp_path, "condsim/errors.py", "")
    _write(tmp_path, "condsim/results/__init__.py", "")
    _write(tmp_path, "condsim/results/run_result.py", "")
    _write(tmp_path, "condsim/models/__init__.py", "from . import base\n")
    _write(tmp_path, "condsim/models/base.py", "import condsim.errors\n")
    _write(tmp_path, "condsim/models/up.py", "\n".join([
        "from typing import TYPE_CHECKING",
        "import condsim.results.run_result",             # 2: module level
        "from condsim.results import run_result",        # 3: from package import module
        "if TYPE_CHECKING:",
        "    from condsim.results.run_result import X",  # 5: type-checking block
        "def f():",
        "    from ..results.run_result import y",        # 7: relative, in a function
        "class C:",
        "    def m(self):",
        "        import condsim.cli.main",               # 10: method, top layer
        "from condsim import suite",                     # 11: from condsim import module
        "from . import base",                            # 12: same layer: fine
        "from condsim.errors import CondsimError",       # 13: lower layer: fine
        "",
    ]))
    unassigned, upward = check(tmp_path)
    assert unassigned == []
    lines = sorted(int(u.split(":")[1].split()[0]) for u in upward)
    assert lines == [2, 3, 5, 7, 10, 11], upward
    assert all(u.startswith(str(Path("condsim/models/up.py"))) for u in upward)


def test_checker_reports_a_module_without_a_layer(tmp_path: Path) -> None:
    _write(tmp_path, "condsim/__init__.py", "")
    _write(tmp_path, "condsim/newthing.py", "")
    _write(tmp_path, "condsim/newpkg/__init__.py", "")
    unassigned, _ = check(tmp_path)
    assert unassigned == ["condsim.newpkg", "condsim.newthing"]


@pytest.mark.parametrize("module", ["condsim.models.combiner", "condsim.cli.main"])
def test_layer_table_covers_subpackage_modules(module: str) -> None:
    assert layer_of(module) is not None
