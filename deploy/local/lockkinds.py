"""Locks by kind: requirements.txt (pip-compile, deploy/local/pins.py), uv.lock (`uv lock`) and
poetry.lock (`poetry lock`). The tool never rewrites a user's lock except through its own tool.

`uv` is found on PATH or next to this interpreter; `poetry` on PATH, else run through
`uvx --from 'poetry>=2,<3' poetry` (uv fetches it once into its cache).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.local import apppython
from deploy.local.apppython import poetry

KIND_FILES = {"uv": "uv.lock", "poetry": "poetry.lock"}


@dataclass(frozen=True)
class LockKind:
    """The app's kind of lock, its lock file and the project directory its tool runs in."""

    kind: str  # "requirements", "uv" or "poetry"
    lock: Path
    project: Path  # requirements: the app's root


def _pyproject_data(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def uv_project(settings: Settings) -> Path | None:
    """The uv project (workspace root if the app is a member) that holds or would hold uv.lock."""
    lock = apppython.find_upward(settings, "uv.lock")
    if lock:
        return lock.parent
    innermost = None
    for d in apppython.app_dirs(settings):
        data = _pyproject_data(d / "pyproject.toml") if (d / "pyproject.toml").exists() else None
        if data is None:
            continue
        if data.get("tool", {}).get("uv", {}).get("workspace"):
            return d
        innermost = innermost or d
    return innermost


def detect(settings: Settings) -> LockKind:
    """The lock kind: the `lock_kind` setting, else uv.lock, poetry.lock, requirements.txt, or
    a pyproject.toml (Poetry's if it has [tool.poetry], else uv's)."""
    kind = settings.lock_kind
    if kind == "auto":
        if apppython.find_upward(settings, "uv.lock"):
            kind = "uv"
        elif apppython.find_upward(settings, "poetry.lock"):
            kind = "poetry"
        elif settings.path(settings.requirements).exists():
            kind = "requirements"
        else:
            found = apppython.pyproject(settings)
            if found and "poetry" in found[1].get("tool", {}):
                kind = "poetry"
            elif found and "project" in found[1]:
                kind = "uv"
            else:
                kind = "requirements"
    if kind == "requirements":
        return LockKind(kind, settings.path(settings.lock_file), settings.root)
    if kind == "uv":
        project = uv_project(settings)
    else:
        marker = apppython.find_upward(settings, "poetry.lock") or apppython.find_upward(
            settings, "pyproject.toml")
        project = marker.parent if marker else None
    if project is None:
        raise DeployError(f"lock_kind is '{kind}' but there is no pyproject.toml",
                          "create the project's pyproject.toml, or set `lock_kind`")
    return LockKind(kind, project / KIND_FILES[kind], project)


def uv() -> str:
    path = apppython.tool_path("uv")
    if not path:
        raise DeployError("this app locks with uv (uv.lock) but uv is not installed",
                          "install uv: pip install uv (or see docs.astral.sh/uv)")
    return path


def check_command(lk: LockKind) -> list[str]:
    """The lock tool's own freshness check (exit 1 when the lock is stale)."""
    if lk.kind == "uv":
        return [uv(), "lock", "--check", "--project", str(lk.project)]
    return [*poetry(), "check", "--lock", "--directory", str(lk.project)]


def lock_command(lk: LockKind, upgrade: bool = False,
                 upgrade_packages: tuple[str, ...] = ()) -> list[str]:
    """Re-lock through the project's own tool, keeping pins unless asked to upgrade."""
    if lk.kind == "uv":
        argv = [uv(), "lock", "--project", str(lk.project)]
        if upgrade:
            argv.append("--upgrade")
        for name in upgrade_packages:
            argv += ["--upgrade-package", name]
        return argv
    argv = [*poetry(), "lock", "--directory", str(lk.project)]
    if upgrade:
        argv.append("--regenerate")
    if upgrade_packages:  # poetry updates single packages with `poetry update --lock NAME`
        argv = [*poetry(), "update", "--lock", "--directory", str(lk.project),
                *upgrade_packages]
    return argv


_TRACE_FRAME = re.compile(r'^\s+File "|^Traceback \(most recent call last\)')
# Poetry 2 warns about every [tool.poetry] field that has a [project] equivalent, around
# (and on stdout, after) the error that matters; a warning may run on to further lines.
_POETRY_NOISE = re.compile(r"^Warning: \[tool\.poetry[\].]")
_MESSAGE_START = re.compile(r"^(?:Warning|Error|\w*Error|\w*Exception)\b|^\S+:\s")
# uvx's own progress while it fetches Poetry (its first run with an empty cache).
_UVX_PROGRESS = re.compile(r"^\s*(?:Downloading|Downloaded) \S+|^(?:Installed|Resolved|Prepared|"
                           r"Audited) \d+ packages? in ")


def without_poetry_noise(output: str) -> str:
    """Poetry's output without its [tool.poetry] deprecation warnings."""
    kept, in_noise = [], False
    for line in output.splitlines():
        if _POETRY_NOISE.match(line):
            in_noise = True
            continue
        if _UVX_PROGRESS.match(line):
            continue
        if in_noise and line.strip() and not _MESSAGE_START.match(line):
            continue
        in_noise = False
        kept.append(line)
    return "\n".join(kept)


def brief(output: str, lines: int = 12) -> str:
    """A tool's error without Python traceback frames: its last meaningful lines."""
    kept, in_frame = [], False
    for line in without_poetry_noise(output).splitlines():
        if _TRACE_FRAME.match(line):
            in_frame = True
            continue
        if in_frame and line.startswith("    "):
            continue
        in_frame = False
        if line.strip():
            kept.append(line)
    return "\n".join("  " + line for line in kept[-lines:])


def installs_from_lock(kind: str, run_lines: list[str], lock_name: str) -> tuple[bool, str, str]:
    """Whether the Dockerfile's RUN lines install from a uv or Poetry lock: (ok, reason, fix)."""
    words_per_line = [line.split() for line in run_lines]
    if kind == "uv":
        for words in words_per_line:
            if "uv" in words and "export" in words and "--frozen" in words:
                return (False, "the Dockerfile runs `uv export --frozen`, which exits 0 on a "
                               "stale lock", "use `uv export --locked`")
        for words in words_per_line:
            if "uv" in words and "sync" in words:
                if "--locked" in words or "--frozen" in words:
                    return True, "", ""
                return (False, "the Dockerfile runs `uv sync` without --locked: the build may "
                               "re-resolve instead of installing the lock",
                        "use `uv sync --locked` (or --frozen)")
            if "uv" in words and "export" in words and "--locked" in words:
                return True, "", ""
        return (False, f"the Dockerfile never installs from {lock_name}",
                f"COPY {lock_name} and pyproject.toml, then `RUN uv sync --locked`")
    for words in words_per_line:
        if "poetry" in words and ("install" in words or "export" in words):
            return True, "", ""
    return (False, f"the Dockerfile never installs from {lock_name}",
            f"COPY {lock_name} and pyproject.toml, then `RUN poetry install --no-root`")
