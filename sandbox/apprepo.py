"""An app repo made from an embedded example: what `inv demo`, the tests and the benchmarks
deploy. One builder, so that the three cannot drift apart.

The repo holds the example's v1 (its `v2/` overlay is applied by `apply_v2`), a `.env` made
from `.env.example`, `tasks.py` and `fabfile/` as `deploy-init` writes them, a `.venv` that is
this interpreter's environment (it holds the example's requirements: the app's development
environment, where its tests and the migrations check run), all committed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example"
EXAMPLE_POSTGRES = REPO / "example-postgres"
TASKS_PY = "from deploy.cli.tasks import ns  # noqa: F401\n"
FABFILE = "from deploy.cli.fabtasks import ns  # noqa: F401\n"
# What a copy leaves out: the v2 overlay, local data, caches and the example's own env files.
SKIP = shutil.ignore_patterns(
    "v2", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "data", "*.db",
    "*.db-journal", ".env", "app.env", ".venv",
)
GIT_USER = ["-c", "user.name=Deploy Example", "-c", "user.email=example@localhost",
            "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    """git in `repo`; its stdout. A failure raises with git's own message."""
    proc = subprocess.run(["git", *GIT_USER, *args], cwd=repo, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit everything (even nothing); the new short SHA, as `inv build` tags it."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "--short=7", "HEAD")


def env_from_example(example_env: str, values: Mapping[str, str]) -> str:
    """`.env.example`'s lines with the keys in `values` set to them (others as written)."""
    lines = []
    for line in example_env.splitlines():
        key = line.split("=", 1)[0].strip()
        if line and not line.startswith("#") and "=" in line and key in values:
            line = f"{key}={values[key]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def make_app_repo(dest: Path, source: Path = EXAMPLE, env: Mapping[str, str] | None = None,
                  *, fabfile: bool = True, message: str = "example app") -> Path:
    """A committed, clean git repo at `dest` (which must not exist) holding `source`'s v1.

    `.env` is `.env.example` with the keys of `env` set; `.env` and `.venv` are git-ignored,
    as in an app repo.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"the example app is missing at {source}")
    shutil.copytree(source, dest, ignore=SKIP)
    (dest / ".env").write_text(env_from_example((dest / ".env.example").read_text(), env or {}))
    (dest / "tasks.py").write_text(TASKS_PY)
    if fabfile:
        (dest / "fabfile").mkdir(exist_ok=True)
        (dest / "fabfile" / "__init__.py").write_text(FABFILE)
    (dest / ".venv").symlink_to(sys.prefix)
    gitignore = dest / ".gitignore"
    ignored = gitignore.read_text().splitlines() if gitignore.exists() else []
    gitignore.write_text("\n".join([*ignored, *(n for n in (".env", ".venv")
                                                if n not in ignored)]) + "\n")
    git(dest, "init", "-q")
    commit_all(dest, message)
    return dest


def apply_v2(repo: Path, source: Path = EXAMPLE, message: str = "v2: items get a note column"
             ) -> str:
    """Overlay the example's `v2/` on the repo and commit it; the new short SHA."""
    shutil.copytree(source / "v2", repo, dirs_exist_ok=True)
    return commit_all(repo, message)
