"""The preflight: named checks that each catch one kind of dev/prod drift on the laptop."""

from __future__ import annotations

import time

from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.local.checks import context, envcomplete, git, migrations, parity, startup
from deploy.local.checks.result import Check, CheckResult, failed, passed

__all__ = ["Check", "CheckResult", "failed", "format_results", "passed", "registry",
           "run_checks"]


def registry() -> dict[str, Check]:
    """Check name -> function, in the order they run."""
    return {
        "python-parity": parity.python_parity,
        "lock-fresh": parity.lock_fresh,
        "env-complete": envcomplete.env_complete,
        "build-context": context.build_context,
        "migrations": migrations.migrations,
        "migrate-at-start": startup.migrate_at_start,
        "git-clean": git.git_clean,
    }


def run_checks(
    settings: Settings, only: list[str] | None = None, skip: list[str] | None = None
) -> list[CheckResult]:
    checks = registry()
    for name in (only or []) + (skip or []):
        if name not in checks:
            raise DeployError(f"no check named '{name}'", f"known checks: {', '.join(checks)}")
    results = []
    for name, check in checks.items():
        if (only and name not in only) or (skip and name in skip):
            continue
        started = time.monotonic()
        try:
            result = check(settings)
        except DeployError as exc:
            result = failed(name, exc.message, exc.fix or "see the reason above")
        except Exception as exc:  # a check must never end the preflight with a traceback
            result = failed(name, f"the check itself crashed: {type(exc).__name__}: {exc}",
                            "this is a bug in the toolkit; run the others with --skip " + name)
        result.seconds = round(time.monotonic() - started, 3)
        results.append(result)
    return results


def format_results(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        text = f"{mark} {r.name:<14} {r.detail if r.ok else r.reason}".rstrip()
        lines.append(text)
        if not r.ok:
            lines.append(f"     {'':<14} fix: {r.fix}")
    return "\n".join(lines)
