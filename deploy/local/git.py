"""Read-only questions to git about the app repo, and the image version they give."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from deploy.core.errors import DeployError
from deploy.core.refs import validate_tag


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise DeployError("git is not installed", "install git, or pass --version") from None


def is_repo(root: Path) -> bool:
    return _git(root, "rev-parse", "--is-inside-work-tree").returncode == 0


def head_sha(root: Path, short: bool = True) -> str:
    result = _git(root, "rev-parse", "--short=7" if short else "--verify", "HEAD")
    if result.returncode != 0:
        raise DeployError(
            f"cannot read the git commit of {root}: {result.stderr.strip()[:120]}",
            "run inside a git repository with at least one commit, or pass --version",
        )
    return result.stdout.strip()


def dirty_files(root: Path) -> list[str]:
    """Paths with uncommitted changes (tracked or untracked, not ignored)."""
    result = _git(root, "status", "--porcelain", "--untracked-files=all")
    if result.returncode != 0:
        raise DeployError(f"{root} is not a git repository", "run `git init` and commit")
    return [line[3:] for line in result.stdout.splitlines() if line.strip()]


def dirty_fingerprint(root: Path, files: list[str]) -> str:
    """A short hash of the uncommitted state: stable while the tree does not change."""
    digest = hashlib.sha256(_git(root, "diff", "HEAD", "--binary").stdout.encode())
    # `git status --porcelain` names paths from the top of the repository, which is not `root`
    # when the app lives in a subdirectory.
    top = Path(_git(root, "rev-parse", "--show-toplevel").stdout.strip() or root)
    for name in sorted(files):
        path = top / name
        digest.update(name.encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def remote_url(root: Path) -> str:
    result = _git(root, "config", "--get", "remote.origin.url")
    return result.stdout.strip() if result.returncode == 0 else ""


def resolve_version(root: Path, explicit: str = "", allow_dirty: bool = True) -> str:
    """The image version: explicit, else the commit's short SHA (`<sha>-dirty-<hash>` if dirty).

    A dirty tree is refused unless `allow_dirty`: an image must be traceable to a commit.
    """
    if explicit:
        return validate_tag(explicit)
    sha = head_sha(root)
    files = dirty_files(root)
    if not files:
        return sha
    if not allow_dirty:
        shown = ", ".join(files[:3]) + (" …" if len(files) > 3 else "")
        raise DeployError(
            f"the working tree has {len(files)} uncommitted change(s): {shown}",
            "commit or stash them, or pass --allow-dirty (the tag then reads <sha>-dirty-<hash>)",
        )
    return f"{sha}-dirty-{dirty_fingerprint(root, files)}"
