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


def _env_prefix(cls: ast.ClassDef) -> str:
    """The `env_prefix` of a settings class: model_config = SettingsConfigDict(...) or Config."""
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "model_config" for t in stmt.targets
        ):
            value = stmt.value
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
    return ""


def _is_settings_class(cls: ast.ClassDef, settings_classes: set[str]) -> bool:
    for base in cls.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name in SETTINGS_BASES or name in settings_classes:
            return True
    return False


def _field_reads(cls: ast.ClassDef, where: str) -> list[EnvRead]:
    prefix = _env_prefix(cls)
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


def file_reads(path: Path, root: Path) -> list[EnvRead]:
    """Every environment read in one source file ([] if it does not parse)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    rel = path.relative_to(root).as_posix()
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads: list[EnvRead] = []
    settings_classes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _is_settings_class(node, settings_classes):
            settings_classes.add(node.name)
            reads.extend(_field_reads(node, rel))
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _literal(node.slice)
            if name and isinstance(node.ctx, ast.Load):
                reads.append(EnvRead(name, True, f"{rel}:{node.lineno}"))
        elif isinstance(node, ast.Call) and _is_getenv(node.func) and node.args:
            name = _literal(node.args[0])
            if name:
                has_default = len(node.args) > 1 or bool(node.keywords)
                required = not has_default and not _tested(node, parents)
                reads.append(EnvRead(name, required, f"{rel}:{node.lineno}"))
    return reads


def app_env_reads(root: Path) -> list[EnvRead]:
    """Every environment read in the app's source under `root`."""
    return [read for path in python_files(root) for read in file_reads(path, root)]


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
