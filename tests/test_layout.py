"""The package's layout holds: no module of deploy/ imports one that imports it back, at any
depth, counting every import (at the top, inside functions, under TYPE_CHECKING), so that
imports sit at the top of modules; and only the Invoke/Fabric wiring (deploy/cli/) imports
inside functions, to keep `inv --list` and `fab --list` fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

import deploy

PACKAGE = Path(deploy.__file__).parent
# The probe runs in the app's environment, as a file of its own: it imports Alembic when it
# runs there, and nothing of the toolkit.
OWN_PROCESS = {"local/checks/alembic_probe.py"}


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package at `package`."""
    found = {}
    for path in package.rglob("*.py"):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in it (relative imports
    resolved; `from pkg import name` counts as `pkg.name` when that is a module, else `pkg`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [f"{base}.{alias.name}" for alias in node.names]
            names = [n if n in known else base for n in names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import deploy.vm.flows.x` -> the module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def import_cycles(package: Path) -> list[list[str]]:
    """Every cycle of the package's import graph, as the modules in it (Tarjan's strongly
    connected components larger than one module)."""
    files = modules(package)
    graph = {m: imported(m, p, set(files)) for m, p in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def function_level_imports(package: Path) -> list[str]:
    """`file:line` of every import inside a function, outside deploy/cli/."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("cli/") or relative in OWN_PROCESS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found += [f"{relative}:{n.lineno}" for n in ast.walk(node)
                          if isinstance(n, ast.Import | ast.ImportFrom)]
    return found


def test_the_package_has_no_import_cycle():
    cycles = import_cycles(PACKAGE)
    assert cycles == [], "modules that import each other, directly or not: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_folders_import_downwards_only():
    """core/ and commands/ are the bottom (both halves use them) and import nothing of the
    folders above; cli/ is the top: nothing in the package imports the wiring."""
    files = modules(PACKAGE)
    wrong = []
    for module, path in files.items():
        folder = module.split(".")[1] if module.count(".") else ""
        for dependency in imported(module, path, set(files)):
            other = dependency.split(".")[1] if dependency.count(".") else ""
            bottom_up = folder in ("core", "commands") and other not in ("core", "commands")
            into_cli = other == "cli" and folder != "cli"
            if bottom_up or into_cli:
                wrong.append(f"{module} -> {dependency}")
    assert wrong == []


def test_only_the_cli_wiring_imports_inside_functions():
    assert function_level_imports(PACKAGE) == [], (
        "import these at the top of their module (only deploy/cli/ defers imports, for the "
        "start-up time of `inv --list`/`fab --list`)")


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    """The check can fail: a cycle closed by an import inside a function, a relative one."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import a\n")
    (pkg / "c.py").write_text("from pkg import b\n")
    assert import_cycles(pkg) == [["pkg.b", "pkg.sub.a"]]
