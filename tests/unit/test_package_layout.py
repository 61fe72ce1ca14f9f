"""The package's shape: subpackages that say what lives in them, a small top level, no import
cycles (imports inside functions included), and a thin training entry point."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnlab

PACKAGE = Path(cnnlab.__file__).parent
MAX_TOP_LEVEL_MODULES = 6


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The cnnlab modules ``path`` imports anywhere in it (top level or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from cnnlab.data import cache` imports the module cnnlab.data.cache; a name that is
            # no module (`from cnnlab.data import DATASETS`) comes from the package itself.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            if not all(n in known for n in names):
                names.append(node.module)
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {name: imported_modules(path, set(mods)) - {name} for name, path in mods.items()}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = stack[stack.index(name) :] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_top_level_is_small_and_every_subpackage_says_what_lives_there() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    for init in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.parent.name}/ has no docstring saying what lives there"


def test_training_entry_point_is_thin() -> None:
    assert len((PACKAGE / "cli" / "train.py").read_text().splitlines()) <= 150
