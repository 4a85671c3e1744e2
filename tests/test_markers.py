"""The ``slow`` marker is a rule the suite checks, not a memory: every test that trains a model or
starts a process carries it (on the function, its class, or the module's ``pytestmark``), so
``make test-fast`` (``pytest -m "not slow"``) runs none of them.

What counts as heavy, found by reading each test module's AST (no test is run):

* a call into ``subprocess`` (a process: the CLI's ``run_cli``, torchrun and its node helpers in
  ``tests/nodes.py``, a tool or a fresh interpreter all go through it);
* a trainer's ``.fit()``, and the commands that train or run a teacher over a whole split:
  :data:`HEAVY_RUNS` (``teacher_train.run``, ``dump_targets.run``, ``distill_student.run``, ``sweep.run``,
  ``demo.run``);
* ``run_cli_in_process`` with one of those commands (:data:`HEAVY_VERBS`), or with a command the
  call does not spell out (a table's entry, say); ``--help`` and ``--version`` are light.

A test is heavy when it calls one of them, directly or through the functions it calls (a helper of
its own module, or one it imports from another module of ``tests/``), or through the fixtures it
uses (its parameters, ``usefixtures`` marks, the fixtures those fixtures use; looked up in its
module and in the ``conftest.py`` files above it).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

TESTS = Path(__file__).resolve().parent

HEAVY_RUNS = {
    f"mlkd_cache.commands.{verb}.run": verb.replace("_", "-")
    for verb in ("teacher_train", "dump_targets", "distill_student", "sweep", "demo")
}
HEAVY_VERBS = frozenset(HEAVY_RUNS.values())
# The other commands: they score, label, export, read or draw, each in seconds on the tests' data.
LIGHT_COMMANDS = ("evaluate", "tune_thresholds", "verify", "inspect_cache", "import_teacher", "predict", "export", "plot")
IN_PROCESS_RUNNER = "run_cli_in_process"
LIGHT_FLAGS = frozenset({"--help", "-h", "--version"})


@dataclass
class Module:
    """One parsed module of the test package: its functions, fixtures, imports and marks."""

    name: str  # dotted, e.g. tests.engine.test_dump
    path: Path
    tree: ast.Module
    functions: Dict[str, ast.FunctionDef] = field(default_factory=dict)
    fixtures: Dict[str, ast.FunctionDef] = field(default_factory=dict)
    imported: Dict[str, str] = field(default_factory=dict)  # local name -> dotted module.attr or module
    slow_names: Set[str] = field(default_factory=set)  # module-level names bound to pytest.mark.slow
    slow_module: bool = False  # pytestmark holds the slow mark
    module_fixtures: List[str] = field(default_factory=list)  # pytestmark's usefixtures


def _dotted(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _marks(node: ast.AST) -> Iterator[ast.AST]:
    """The marks of a decorator list entry or of a ``pytestmark`` value (a mark, or a list of them)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        for item in node.elts:
            yield from _marks(item)
    else:
        yield node


def _is_slow(mark: ast.AST, slow_names: Set[str]) -> bool:
    target = mark.func if isinstance(mark, ast.Call) else mark
    name = _dotted(target)
    return name in ("pytest.mark.slow", "mark.slow") or name in slow_names


def _usefixtures(mark: ast.AST) -> List[str]:
    if isinstance(mark, ast.Call) and (_dotted(mark.func) or "").endswith("mark.usefixtures"):
        return [a.value for a in mark.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return []


def _parametrized(decorators: List[ast.expr]) -> Set[str]:
    """Argument names a ``parametrize`` decorator supplies (they are not fixtures)."""
    names: Set[str] = set()
    for mark in decorators:
        if isinstance(mark, ast.Call) and (_dotted(mark.func) or "").endswith("mark.parametrize") and mark.args:
            first = mark.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names |= {n.strip() for n in first.value.split(",")}
            elif isinstance(first, (ast.List, ast.Tuple)):
                names |= {e.value for e in first.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return names


def _fixture_name(fn: ast.FunctionDef) -> Optional[str]:
    """The name ``fn`` is a fixture under, or None when it is not one."""
    for deco in fn.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if (_dotted(target) or "") in ("pytest.fixture", "fixture"):
            if isinstance(deco, ast.Call):
                for kw in deco.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        return str(kw.value.value)
            return fn.name
    return None


def _resolve_relative(module: str, level: int, target: Optional[str], is_package: bool) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, target] if target else base)


def parse_module(name: str, path: Path, source: Optional[str] = None) -> Module:
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"), filename=str(path))
    module = Module(name, path, tree)
    is_package = path.name == "__init__.py"
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                module.imported[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            source_module = _resolve_relative(name, node.level, node.module, is_package) if node.level else node.module or ""
            for alias in node.names:
                module.imported[alias.asname or alias.name] = f"{source_module}.{alias.name}"
        elif isinstance(node, ast.FunctionDef):
            fixture = _fixture_name(node)
            if fixture is not None:
                module.fixtures[fixture] = node
            module.functions[node.name] = node
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if "pytestmark" in targets:
                marks = list(_marks(node.value))
                module.slow_module = any(_is_slow(m, module.slow_names) for m in marks)
                module.module_fixtures = [f for m in marks for f in _usefixtures(m)]
            elif _dotted(node.value) == "pytest.mark.slow":
                module.slow_names.update(targets)
    return module


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class Suite:
    """Every module of a test package (``root``, e.g. ``tests/``), and what each test calls."""

    def __init__(self, root: Path, sources: Optional[Dict[str, str]] = None) -> None:
        """``sources``: relative path -> text, in place of the files under ``root`` (the checker's own tests)."""
        self.root = root
        self.modules: Dict[str, Module] = {}
        files = sources if sources is not None else {str(p.relative_to(root)): None for p in sorted(root.rglob("*.py"))}
        for rel, text in files.items():
            path = root / rel
            name = module_name(path, root)
            self.modules[name] = parse_module(name, path, text)
        self._heavy: Dict[Tuple[str, str], Optional[str]] = {}

    # -- what a call reaches ---------------------------------------------------------------------

    def _function(self, dotted: str) -> Optional[Tuple[Module, ast.FunctionDef]]:
        """The function of the test package that ``dotted`` (module.attr) names, if any."""
        module, _, attr = dotted.rpartition(".")
        found = self.modules.get(module)
        if found is not None and attr in found.functions:
            return found, found.functions[attr]
        return None

    def _qualified(self, module: Module, func: ast.expr) -> Optional[str]:
        """The dotted name a call's target refers to: ``module.attr`` through the imports, or the
        module's own function (``tests.x.helper``)."""
        name = _dotted(func)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head in module.imported:
            return f"{module.imported[head]}.{rest}" if rest else module.imported[head]
        if head in module.functions and not rest:
            return f"{module.name}.{head}"
        return name

    def _runner_is_heavy(self, call: ast.Call) -> Optional[str]:
        """Why a ``run_cli_in_process`` call is heavy, or None: the command it names trains, or
        the call does not spell its command out."""
        args = call.args[0] if call.args else None
        if not isinstance(args, (ast.List, ast.Tuple)) or not args.elts:
            return f"{IN_PROCESS_RUNNER} with a command not spelt out"
        words = [e.value for e in args.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if LIGHT_FLAGS & set(words):
            return None
        first = args.elts[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            return f"{IN_PROCESS_RUNNER} with a command not spelt out"
        return f"{IN_PROCESS_RUNNER}({first.value!r}, ...)" if first.value in HEAVY_VERBS else None

    def _call_is_heavy(self, module: Module, call: ast.Call, seen: Set[Tuple[str, str]]) -> Optional[str]:
        """Why ``call`` (made in ``module``) is heavy, or None."""
        if isinstance(call.func, ast.Attribute) and call.func.attr == "fit":
            return f"{ast.unparse(call.func)}()"
        qualified = self._qualified(module, call.func) or ""
        if qualified.split(".")[0] == "subprocess" or qualified in HEAVY_RUNS:
            return qualified
        if qualified.rpartition(".")[2] == IN_PROCESS_RUNNER:
            return self._runner_is_heavy(call)
        found = self._function(qualified)
        if found is None:
            return None
        inner = self.heavy_call(*found, seen)
        return None if inner is None else f"{found[1].name} -> {inner}"

    def heavy_call(self, module: Module, fn: ast.FunctionDef, seen: Optional[Set[Tuple[str, str]]] = None) -> Optional[str]:
        """What makes ``fn`` heavy (a chain such as ``helper -> subprocess.run``), or None."""
        key = (module.name, fn.name)
        if key in self._heavy:
            return self._heavy[key]
        seen = set() if seen is None else seen
        if key in seen:
            return None
        seen.add(key)
        why = None
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                why = self._call_is_heavy(module, node, seen)
                if why is not None:
                    break
        self._heavy[key] = why
        return why

    # -- fixtures ----------------------------------------------------------------------------------

    def _conftests(self, module: Module) -> List[Module]:
        """The conftest modules that serve ``module``, nearest first."""
        found = []
        folder = module.path.parent
        while True:
            name = module_name(folder / "conftest.py", self.root)
            if name in self.modules and self.modules[name] is not module:
                found.append(self.modules[name])
            if folder == self.root:
                return found
            folder = folder.parent

    def _fixture(self, module: Module, name: str) -> Optional[Tuple[Module, ast.FunctionDef]]:
        for where in (module, *self._conftests(module)):
            if name in where.fixtures:
                return where, where.fixtures[name]
        return None

    def heavy_fixture(self, module: Module, names: List[str], seen: Set[Tuple[str, str]]) -> Optional[str]:
        for name in names:
            found = self._fixture(module, name)
            if found is None or (found[0].name, name) in seen:
                continue
            seen.add((found[0].name, name))
            where, fn = found
            why = self.heavy_call(where, fn)
            if why is None:
                why = self.heavy_fixture(where, _requested(fn), seen)
            if why is not None:
                return f"fixture {name} -> {why}"
        return None

    # -- tests -------------------------------------------------------------------------------------

    def tests(self) -> Iterator[Tuple[Module, Optional[ast.ClassDef], ast.FunctionDef]]:
        for module in self.modules.values():
            if not module.path.name.startswith("test_"):
                continue
            for node in module.tree.body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                    yield module, None, node
                elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                            yield module, node, item

    def unmarked_heavy(self) -> List[str]:
        """``path::test: why`` of every heavy test without the slow mark."""
        found = []
        for module, cls, fn in self.tests():
            decorators = [*(cls.decorator_list if cls else []), *fn.decorator_list]
            if module.slow_module or any(_is_slow(m, module.slow_names) for d in decorators for m in _marks(d)):
                continue
            fixtures = [*module.module_fixtures, *(f for d in decorators for f in _usefixtures(d)), *_requested(fn)]
            fixtures = [f for f in fixtures if f not in _parametrized(decorators)]
            why = self.heavy_call(module, fn) or self.heavy_fixture(module, fixtures, set())
            if why is not None:
                where = f"{module.path.relative_to(self.root.parent)}::{f'{cls.name}::' if cls else ''}{fn.name}"
                found.append(f"{where}: {why}")
        return found


def _requested(fn: ast.FunctionDef) -> List[str]:
    """The fixtures ``fn`` asks for: its parameters, and ``request.getfixturevalue("name")``."""
    names = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs] if a.arg not in ("self", "cls")]
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "getfixturevalue"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value))
    return names


# ------------------------------------------------------------------------------------------------
# The rule on this suite
# ------------------------------------------------------------------------------------------------


def test_every_heavy_test_is_marked_slow():
    unmarked = Suite(TESTS).unmarked_heavy()
    assert not unmarked, "mark these @pytest.mark.slow (they train a model or start a process):\n" + "\n".join(unmarked)


def test_the_heavy_entry_points_exist():
    """The names the checker looks for are the commands' and the fixtures' real names."""
    import importlib

    for dotted in HEAVY_RUNS:
        module, _, attr = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), dotted
    from mlkd_cache.cli.main import app

    assert HEAVY_VERBS <= set(app.commands)
    conftest = Suite(TESTS).modules["tests.conftest"]
    assert IN_PROCESS_RUNNER in conftest.functions
    assert Suite(TESTS).heavy_call(conftest, conftest.functions["run_cli"]) == "subprocess.run"


# ------------------------------------------------------------------------------------------------
# The checker on made-up suites
# ------------------------------------------------------------------------------------------------

CONFTEST = """
import subprocess
import pytest
from mlkd_cache.commands import teacher_train as teacher


def run_cli(args):
    return subprocess.run(["python", "-m", "mlkd_cache", *args])


def run_cli_in_process(args):
    return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return teacher.run(None, tmp_path_factory.mktemp("t"))


@pytest.fixture
def light(tmp_path):
    return tmp_path
"""


def checked(test_module: str, extra: Optional[Dict[str, str]] = None) -> List[str]:
    """The unmarked heavy tests of a made-up suite: ``tests/conftest.py`` above, and
    ``tests/sub/test_x.py`` holding ``test_module``."""
    sources = {"conftest.py": CONFTEST, "sub/__init__.py": "", "sub/test_x.py": textwrap.dedent(test_module), **(extra or {})}
    return [line.split("::", 1)[1] for line in Suite(TESTS, sources).unmarked_heavy()]


# A test module's helpers, above the test each case appends
HELPERS = """
import subprocess
import pytest
from mlkd_cache.commands import distill_student as distill
from ..conftest import run_cli, run_cli_in_process
from .. import nodes


def helper():
    return subprocess.check_output(["true"])


@pytest.fixture
def local_model(trained):
    return trained


"""
NODES = "import subprocess\n\n\ndef start(n):\n    return subprocess.Popen(['torchrun'])\n"


@pytest.mark.parametrize(
    "test, why",
    [
        ("def test_it(tmp_path):\n    subprocess.run(['true'])", "subprocess.run"),
        ("def test_it():\n    run_cli(['--version'])", "run_cli -> subprocess.run"),
        ("def test_it():\n    helper()", "helper -> subprocess.check_output"),
        ("def test_it():\n    nodes.start(2)", "start -> subprocess.Popen"),
        ("def test_it(cfg):\n    Trainer(cfg).fit()", "Trainer(cfg).fit()"),
        ("def test_it(light):\n    distill.run(None, light)", "mlkd_cache.commands.distill_student.run"),
        ("def test_it():\n    run_cli_in_process(['teacher-train', '-c', 'x.py'])", "run_cli_in_process('teacher-train', ...)"),
        ("def test_it(args):\n    run_cli_in_process(args)", "run_cli_in_process with a command not spelt out"),
        ("def test_it(trained):\n    pass", "fixture trained -> mlkd_cache.commands.teacher_train.run"),
        (
            "def test_it(local_model):\n    pass",
            "fixture local_model -> fixture trained -> mlkd_cache.commands.teacher_train.run",
        ),
        (
            "@pytest.mark.usefixtures('trained')\ndef test_it():\n    pass",
            "fixture trained -> mlkd_cache.commands.teacher_train.run",
        ),
    ],
)
def test_the_checker_finds_an_unmarked_heavy_test(test, why):
    assert checked(HELPERS + test + "\n", {"nodes.py": NODES}) == [f"test_it: {why}"]


@pytest.mark.parametrize(
    "marked",
    [
        "pytestmark = pytest.mark.slow\n\n\ndef test_it():\n    subprocess.run(['true'])\n",
        "pytestmark = [pytest.mark.numeric, pytest.mark.slow]\n\n\ndef test_it():\n    subprocess.run(['true'])\n",
        "@pytest.mark.slow\ndef test_it():\n    subprocess.run(['true'])\n",
        "@pytest.mark.slow\nclass TestIt:\n    def test_it(self):\n        subprocess.run(['true'])\n",
        "def test_it(light):\n    run_cli_in_process(['evaluate', 'm.pt'])\n",
        "def test_it():\n    run_cli_in_process(['teacher-train', '--help'])\n",
        "@pytest.mark.parametrize('trained', [1, 2])\ndef test_it(trained):\n    pass\n",
    ],
)
def test_the_checker_accepts_a_marked_or_light_test(marked):
    assert checked(f"import subprocess\nimport pytest\nfrom ..conftest import run_cli_in_process\n\n\n{marked}") == []


def test_the_checker_names_a_heavy_method_of_an_unmarked_class():
    module = "import subprocess\n\n\nclass TestIt:\n    def test_it(self):\n        subprocess.run(['true'])\n"
    assert checked(module) == ["TestIt::test_it: subprocess.run"]


def test_every_command_is_judged_heavy_or_light():
    """A new command is classified here before its tests can be checked: one that trains or runs a
    teacher over a split joins HEAVY_RUNS, any other LIGHT_COMMANDS."""
    commands = {p.stem for p in (TESTS.parent / "mlkd_cache" / "commands").glob("*.py") if p.stem != "__init__"}
    heavy = {name.split(".")[2] for name in HEAVY_RUNS}
    assert not heavy & set(LIGHT_COMMANDS)
    assert commands == heavy | set(LIGHT_COMMANDS), (
        f"judge these commands in tests/test_markers.py: {sorted(commands - heavy - set(LIGHT_COMMANDS))}"
    )
