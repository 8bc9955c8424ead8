"""The one exception type the toolkit raises for failures a user can act on, and the wrapper
that turns it into an exit code for the tasks."""

from __future__ import annotations

import functools
import http.client
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import invoke

P = ParamSpec("P")
R = TypeVar("R")


class DeployError(Exception):
    """A failure the user can act on: what went wrong and how to fix it."""

    def __init__(self, message: str, fix: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


def friendly(body: Callable[P, R]) -> Callable[P, R]:
    """Show a DeployError as two lines (what, fix) and exit 1: no traceback for users."""
    @functools.wraps(body)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return body(*args, **kwargs)
        except DeployError as exc:
            text = f"error: {exc.message}"
            if exc.fix:
                text += f"\n  fix: {exc.fix}"
            raise invoke.Exit(text, code=exc.exit_code) from None
        except KeyboardInterrupt as exc:  # SIGTERM/SIGHUP arrive as one too (deploy.vm)
            raise invoke.Exit("interrupted", code=128 + getattr(exc, "signum", 2)) from None

    return wrapper


def error_words(exc: BaseException) -> str:
    """An error's own words on one line, with its kind when the words alone do not say what
    happened (`BadStatusLine: SSH-2.0-…`: something that is not an HTTP server answered)."""
    words = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {words}" if isinstance(exc, http.client.HTTPException) \
        else words
