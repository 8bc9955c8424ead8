"""The environment variables an app's own code reads, found by reading its source (AST).

Three kinds of reads are found: pydantic `BaseSettings` fields (with the class's `env_prefix`,
or a field's `alias`/`validation_alias`), `os.environ[...]`, and `os.environ.get(...)` /
`os.getenv(...)`. A read is *required* when the code has no fallback for it: a settings field
without a default, a subscript, or a `get`/`getenv` without a default whose value is not tested
right away (`os.getenv("X") or "d"`, `if os.getenv("X"):`, `os.getenv("X") == "1"` handle the
missing case themselves).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Directories that are not the app's shipped code.
SKIP_DIRS = frozenset({
    ".venv", "venv", ".git", "node_modules", "__pycache__", "site-packages", ".tox", ".nox",
    "tests", "test", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache",
})
SETTINGS_BASES = frozenset({"BaseSettings"})


@dataclass(frozen=True)
class EnvRead:
    """One read of an environment variable: where, and whether the code has a fallback."""

    name: str
    required: bool
    where: str  # "path:line"


def python_files(root: Path) -> list[Path]:
    """The app's .py files under `root`: no venvs, tests, caches or migration scripts."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel[:-1]):
            continue
        if "versions" in rel[:-1] or rel[-1] == "conftest.py" or rel[-1].startswith("test_"):
            continue
        out.append(path)
    return out


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and \
            node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _is_getenv(node: ast.AST) -> bool:
    """`os.getenv` / `getenv` / `os.environ.get` / `environ.get`."""
    if isinstance(node, ast.Attribute):
        if node.attr == "getenv" and isinstance(node.value, ast.Name) and node.value.id == "os":
            return True
        return node.attr == "get" and _is_environ(node.value)
    return isinstance(node, ast.Name) and node.id == "getenv"


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _tested(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether the value of `node` is checked right where it is read (so None is handled)."""
    parent = parents.get(node)
    if isinstance(parent, ast.BoolOp):
        return True
    if isinstance(parent, ast.Compare):
        return True
    if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.Not):
        return True
    if isinstance(parent, ast.If | ast.While | ast.IfExp | ast.Assert) and parent.test is node:
        return True
    return False


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _env_prefix(cls: ast.ClassDef) -> str | None:
    """The `env_prefix` a settings class sets itself (model_config = SettingsConfigDict(...),
    a dict, or `class Config`), None when it sets none (it inherits its bases')."""
    for stmt in cls.body:
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [target] if target else []
        value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
        if value is not None and any(
            isinstance(t, ast.Name) and t.id == "model_config" for t in targets
        ):
            if isinstance(value, ast.Call):
                prefix = _literal(_keyword(value, "env_prefix"))
                if prefix is not None:
                    return prefix
            if isinstance(value, ast.Dict):
                for key, val in zip(value.keys, value.values, strict=True):
                    if _literal(key) == "env_prefix" and _literal(val) is not None:
                        return _literal(val) or ""
        if isinstance(stmt, ast.ClassDef) and stmt.name == "Config":
            for inner in stmt.body:
                if isinstance(inner, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "env_prefix" for t in inner.targets
                ):
                    return _literal(inner.value) or ""
    return None


@dataclass
class _Module:
    """One parsed source file: its classes, what its names import, the calls it makes."""

    rel: str
    tree: ast.Module
    package: str  # dotted, from the scan root ('' at the top)
    classes: dict[str, ast.ClassDef]
    imports: dict[str, tuple[str, str]]  # local name -> (module, name in it; '' = the module)


def _module(path: Path, root: Path) -> _Module | None:
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None
    rel = path.relative_to(root).as_posix()
    parts = rel.removesuffix(".py").split("/")
    package = ".".join(parts[:-1])
    imports: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package up
                up = package.split(".") if package else []
                up = up[: len(up) - (node.level - 1)] if node.level > 1 else up
                base = ".".join([*up, *([base] if base else [])])
            for alias in node.names:
                imports[alias.asname or alias.name] = (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imports[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0], "")
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    return _Module(rel, tree, package, classes, imports)


class _Index:
    """The app's modules, found by any tail of their dotted name (`backend.app.core.config`
    is also `app.core.config`: the app imports itself from its own directory)."""

    def __init__(self, modules: list[_Module]) -> None:
        self.modules = modules
        self.by_name: dict[str, list[_Module]] = {}
        for mod in modules:
            parts = mod.rel.removesuffix(".py").removesuffix("/__init__").split("/")
            for i in range(len(parts)):
                self.by_name.setdefault(".".join(parts[i:]), []).append(mod)
        self.by_class: dict[str, list[tuple[_Module, ast.ClassDef]]] = {}
        for mod in modules:
            for name, cls in mod.classes.items():
                self.by_class.setdefault(name, []).append((mod, cls))

    def module(self, name: str) -> _Module | None:
        hits = self.by_name.get(name, [])
        return hits[0] if len(hits) == 1 else None

    def resolve(self, mod: _Module, base: ast.expr,
                depth: int = 0) -> tuple[_Module, ast.ClassDef] | None:
        """The class a base-class expression names: in the module, through its imports, else
        the one class of that name in the app."""
        if depth > 10:
            return None
        if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
            target = mod.imports.get(base.value.id)
            other = self.module(target[0] if target and not target[1] else
                                ".".join(target) if target else "")
            if other and base.attr in other.classes:
                return other, other.classes[base.attr]
            name = base.attr
        elif isinstance(base, ast.Name):
            name = base.id
            if name in mod.classes:
                return mod, mod.classes[name]
            target = mod.imports.get(name)
            if target:
                other = self.module(target[0])
                if other and other is not mod:
                    return self.resolve(other, ast.Name(target[1]), depth + 1)
        else:
            return None
        hits = self.by_class.get(name, [])
        return hits[0] if len(hits) == 1 else None

    def is_settings(self, mod: _Module, cls: ast.ClassDef, seen: frozenset[str] = frozenset()
                    ) -> bool:
        key = f"{mod.rel}:{cls.name}"
        if key in seen:
            return False
        for base in cls.bases:
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if name in SETTINGS_BASES:
                return True
            found = self.resolve(mod, base)
            if found and self.is_settings(*found, seen=seen | {key}):
                return True
        return False

    def lineage(self, mod: _Module, cls: ast.ClassDef) -> list[tuple[_Module, ast.ClassDef]]:
        """The class and its settings bases, nearest first (a simple MRO: depth first)."""
        out: list[tuple[_Module, ast.ClassDef]] = []
        stack = [(mod, cls)]
        while stack:
            item = stack.pop(0)
            if any(item[1] is c for _, c in out):
                continue
            out.append(item)
            for base in item[1].bases:
                found = self.resolve(item[0], base)
                if found and self.is_settings(*found):
                    stack.append(found)
        return out


def _field_reads(lineage: list[tuple[_Module, ast.ClassDef]]) -> list[EnvRead]:
    """The fields of a settings class, its bases' included, with the prefix it inherits."""
    prefix = next((p for p in (_env_prefix(c) for _, c in lineage) if p is not None), "")
    reads: dict[str, EnvRead] = {}
    for mod, cls in reversed(lineage):  # a subclass's field replaces its base's
        for read in _own_fields(cls, prefix, mod.rel):
            reads[read.name] = read
    return list(reads.values())


def _own_fields(cls: ast.ClassDef, prefix: str, where: str) -> list[EnvRead]:
    reads = []
    for stmt in cls.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        name = stmt.target.id
        if name.startswith("_") or name == "model_config":
            continue
        annotation = ast.unparse(stmt.annotation)
        if annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        required = stmt.value is None
        env_name = (prefix + name).upper()
        if isinstance(stmt.value, ast.Call) and getattr(stmt.value.func, "id", "") == "Field":
            call = stmt.value
            first = call.args[0] if call.args else None
            has_default = (
                (first is not None and not (isinstance(first, ast.Constant)
                                            and first.value is Ellipsis))
                or _keyword(call, "default") is not None
                or _keyword(call, "default_factory") is not None
            )
            required = not has_default
            alias = _literal(_keyword(call, "validation_alias")) or _literal(
                _keyword(call, "alias"))
            if alias:
                env_name = alias.upper()
        reads.append(EnvRead(env_name, required, f"{where}:{stmt.lineno}"))
    return reads


def _settings_reads(index: _Index) -> dict[str, list[EnvRead]]:
    """module rel -> the reads of its settings classes: those no other settings class derives
    from (what the app instantiates), and any class the app's code calls by name."""
    classes = [(m, c) for m in index.modules for c in m.classes.values()
               if index.is_settings(m, c)]
    bases = {id(b) for m, c in classes for _, b in index.lineage(m, c)[1:]}
    called = {node.func.id if isinstance(node.func, ast.Name) else node.func.attr
              for m in index.modules for node in ast.walk(m.tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)}
    out: dict[str, list[EnvRead]] = {}
    for mod, cls in classes:
        if id(cls) not in bases or cls.name in called:
            out.setdefault(mod.rel, []).extend(_field_reads(index.lineage(mod, cls)))
    return out


def _plain_reads(mod: _Module) -> list[EnvRead]:
    """`os.environ[...]`, `os.environ.get(...)`, `os.getenv(...)` in one module."""
    parents = {child: node for node in ast.walk(mod.tree) for child in ast.iter_child_nodes(node)}
    reads: list[EnvRead] = []
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _literal(node.slice)
            if name and isinstance(node.ctx, ast.Load):
                reads.append(EnvRead(name, True, f"{mod.rel}:{node.lineno}"))
        elif isinstance(node, ast.Call) and _is_getenv(node.func) and node.args:
            name = _literal(node.args[0])
            if name:
                has_default = len(node.args) > 1 or bool(node.keywords)
                required = not has_default and not _tested(node, parents)
                reads.append(EnvRead(name, required, f"{mod.rel}:{node.lineno}"))
    return reads


def _reads(paths: list[Path], root: Path) -> list[EnvRead]:
    modules = [m for m in (_module(p, root) for p in paths) if m]
    settings = _settings_reads(_Index(modules))
    return [read for m in modules for read in settings.get(m.rel, []) + _plain_reads(m)]


def file_reads(path: Path, root: Path) -> list[EnvRead]:
    """Every environment read in one source file ([] if it does not parse)."""
    return _reads([path], root)


def app_env_reads(root: Path) -> list[EnvRead]:
    """Every environment read in the app's source under `root`, settings classes followed
    across its modules (a base class in another module, its fields and env_prefix)."""
    return _reads(python_files(root), root)


def required_reads(root: Path) -> dict[str, str]:
    """Variables the app reads without a fallback -> the first place it reads each."""
    out: dict[str, str] = {}
    for read in app_env_reads(root):
        if read.required:
            out.setdefault(read.name, read.where)
    return out


def dotenv_overrides(root: Path) -> list[str]:
    """Where the app calls `load_dotenv(..., override=True)`: its .env would then replace a
    variable set in the environment (the checks' scratch database URL)."""
    found = []
    for path in python_files(root):
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            override = _keyword(node, "override")
            if name in ("load_dotenv", "dotenv_values") and isinstance(override, ast.Constant) \
                    and override.value is True:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return found
