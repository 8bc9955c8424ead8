"""One check's verdict, and the two ways a check ends (kept apart from the package's
__init__, which imports every check: the checks import this, not the package)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from deploy.core.settings import Settings


@dataclass
class CheckResult:
    """One check's verdict: on failure, a one-line reason and a one-line fix."""

    name: str
    ok: bool
    reason: str = ""
    fix: str = ""
    detail: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


Check = Callable[[Settings], CheckResult]


def passed(name: str, detail: str = "") -> CheckResult:
    return CheckResult(name, True, detail=detail)


def failed(name: str, reason: str, fix: str, detail: str = "") -> CheckResult:
    return CheckResult(name, False, reason=reason, fix=fix, detail=detail)
