"""Imports only point down: the layers of docs/architecture.md, checked on every import of the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from .conftest import REPO

SOURCES = {"mlkd_cache": REPO / "mlkd_cache", "mlkd_cache.cli": REPO / "cli"}  # setup.cfg installs cli/ as mlkd_cache.cli


def layers() -> List[Tuple[str, List[str]]]:
    """``[(layer, [module prefixes])]`` from the ```layers block of docs/architecture.md, top first."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"```layers\n(.*?)```", page, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return [(line.split()[0], line.split()[1:]) for line in block.group(1).splitlines() if line.strip()]


def modules() -> Dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(module: str, path: Path) -> Iterator[Tuple[str, int]]:
    """``(imported module, line)`` for every import of the package in ``path``, at any depth."""
    own_package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package[: len(own_package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "mlkd_cache":
                # "from . import feature" names a module; "from ..errors import X" names one in errors
                for alias in node.names:
                    yield (f"{target}.{alias.name}" if f"{target}.{alias.name}" in ALL else target), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlkd_cache":
                    yield alias.name, node.lineno


ALL = modules()


def layer_of(module: str, table: List[Tuple[str, List[str]]]) -> int:
    """Index of the layer whose longest prefix matches ``module`` (0 = top); -1 when none does.
    The package root names itself only, so a new top-level module must be given a layer."""
    best, best_len = -1, -1
    for k, (_, prefixes) in enumerate(table):
        for prefix in prefixes:
            inside = "." in prefix and module.startswith(prefix + ".")
            if (module == prefix or inside) and len(prefix) > best_len:
                best, best_len = k, len(prefix)
    return best


def test_every_module_is_in_a_layer():
    table = layers()
    assert [name for name, _ in table][-1] == "foundation"
    missing = [m for m in ALL if layer_of(m, table) < 0]
    assert not missing, f"modules in no layer of docs/architecture.md: {missing}"
    assert layer_of("mlkd_cache.newmodule", table) == -1


def test_imports_only_point_down():
    table = layers()
    upward = []
    for module, path in ALL.items():
        mine = layer_of(module, table)
        for target, line in imports(module, path):
            theirs = layer_of(target, table)
            if theirs < mine:  # a smaller index is a higher layer
                upward.append(f"{path.relative_to(REPO)}:{line}: {table[mine][0]} imports {target} ({table[theirs][0]})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check itself: an import from the runtime inside the cache layer is caught."""
    path = tmp_path / "reader.py"
    path.write_text("def f():\n    from ..runtime.checkpoint import load_checkpoint\n")
    table = layers()
    ((target, line),) = imports("mlkd_cache.cache.reader", path)
    assert (target, line) == ("mlkd_cache.runtime.checkpoint", 2)
    assert layer_of(target, table) < layer_of("mlkd_cache.cache.reader", table)
    ((target, _),) = imports("mlkd_cache.losses", _write(tmp_path / "__init__.py", "from . import mld\n"))
    assert target == "mlkd_cache.losses.mld"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ORCHESTRATORS = ("mlkd_cache.commands.demo",)  # runs other commands end to end; the one exception


def test_no_command_imports_another():
    """A command module is one CLI verb's work; what two commands share lives in the runtime."""
    commands = {m for m in ALL if m.startswith("mlkd_cache.commands.")}
    assert len(commands) >= 12
    shared = [
        f"{ALL[module].relative_to(REPO)}:{line}: {module} imports {target}"
        for module in sorted(commands)
        if module not in ORCHESTRATORS
        for target, line in imports(module, ALL[module])
        if target in commands and target != module
    ]
    assert not shared, "commands imported by another command (move what they share to mlkd_cache/runtime):\n" + "\n".join(shared)


def test_the_command_check_sees_one_command_importing_another(tmp_path):
    path = _write(tmp_path / "export.py", "from .predict import write_predictions\nfrom ..runtime import deploy\n")
    found = [target for target, _ in imports("mlkd_cache.commands.export", path)]
    assert found == ["mlkd_cache.commands.predict", "mlkd_cache.runtime.deploy"]
