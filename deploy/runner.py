"""One thin runner for local and remote commands.

Command builders return argument lists; the runner quotes them with `shlex.join`, prints them
(secrets redacted) with how long they took, and runs them through an Invoke `Context` (local) or a
Fabric `Connection` (remote), which share the same `.run()` interface. With `dry_run` it only
prints, so a dry run is every command in order and nothing else.
"""

from __future__ import annotations

import io
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from invoke.exceptions import CommandTimedOut

from deploy.errors import DeployError

Argv = Sequence[str]


class Result:
    """What a command left behind: exit code and captured output."""

    def __init__(self, command: str, exited: int, stdout: str = "", stderr: str = "") -> None:
        self.command = command
        self.exited = exited
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


def sh(script: str) -> list[str]:
    """An argv that runs a small shell script (whose own words are already quoted)."""
    return ["sh", "-c", script]


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Runner:
    """Runs argv lists on one target: an Invoke Context or a Fabric Connection."""

    def __init__(
        self,
        target: Any,
        *,
        where: str = "local",
        dry_run: bool = False,
        secrets: Iterable[str] = (),
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        cwd: str = "",
    ) -> None:
        self.target = target
        self.cwd = cwd
        self.where = where
        self.dry_run = dry_run
        self.secrets = [s for s in secrets if s]
        self.out = out or sys.stdout
        self.clock = clock
        self.history: list[str] = []

    def say(self, message: str) -> None:
        print(f"[{self.where}] {redact(message, self.secrets)}", file=self.out, flush=True)

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | None = None,
        check: bool = True,
        hide: bool = False,
        quiet: bool = False,
        timeout: float | None = None,
        what: str = "",
        fix: str = "",
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Result:
        """Run `argv` (in `cwd`, default the runner's; local runs may replace the environment
        with `env`). With `check`, a non-zero exit raises DeployError(what, fix)."""
        command = shlex.join(argv)
        cwd = self.cwd if cwd is None else cwd
        if cwd:
            command = f"cd {shlex.quote(cwd)} && {command}"
        self.history.append(command)
        if not quiet:
            self.say(f"$ {command}" + (" < (stdin)" if stdin is not None else ""))
        if self.dry_run:
            return Result(command, 0)
        started = self.clock()
        try:
            raw = self.target.run(
                command,
                warn=True,
                hide=True if hide or quiet else None,
                in_stream=io.StringIO(stdin) if stdin is not None else False,
                timeout=timeout,
                **({"env": env, "replace_env": True} if env is not None else {}),
            )
        except CommandTimedOut:
            raise DeployError(
                what or f"command timed out after {timeout:.0f}s ({self.where}): {command}",
                fix or "look at why it hangs, or raise the timeout in deploy.toml",
            ) from None
        result = Result(command, raw.exited, raw.stdout, raw.stderr)
        took = self.clock() - started
        if not quiet:
            status = "ok" if result.ok else f"exit {result.exited}"
            self.say(f"  {status} in {took:.1f}s")
        if check and not result.ok:
            detail = redact(result.output, self.secrets)
            tail = "\n".join(detail.splitlines()[-15:]) if hide or quiet else ""
            message = what or f"command failed ({self.where}, exit {result.exited}): {command}"
            if tail:
                message = f"{message}\n{tail}"
            raise DeployError(redact(message, self.secrets), fix)
        return result
