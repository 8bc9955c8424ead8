"""git-clean: an image must be traceable to a commit."""

from __future__ import annotations

from deploy.core.settings import Settings
from deploy.local import git
from deploy.local.checks.result import CheckResult, failed, passed


def git_clean(settings: Settings) -> CheckResult:
    name = "git-clean"
    if not git.is_repo(settings.root):
        return failed(name, f"{settings.root} is not a git repository", "run `git init` and commit")
    files = git.dirty_files(settings.root)
    if files:
        shown = ", ".join(files[:3]) + (" …" if len(files) > 3 else "")
        return failed(
            name,
            f"{len(files)} uncommitted change(s): {shown}",
            "commit or stash them; or deploy with --allow-dirty (tag <sha>-dirty-<hash>)",
        )
    return passed(name, f"clean at {git.head_sha(settings.root)}")
