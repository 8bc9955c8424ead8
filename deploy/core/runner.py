"""One thin runner for local and remote commands.

Command builders return argument lists; the runner quotes them with `shlex.join` and runs them
through an Invoke `Context` (local) or the persistent remote shell (deploy/vm/shell.py), which share
the same `.run()` interface. By default it prints no command (the flows print one line per
phase); with `echo` (`-v`, `--echo`, DEPLOY_VERBOSE=1) it prints each command, secrets redacted,
and how long it took. With `dry_run` it prints every command and runs none: the result is empty
(exit 0, no output) and the queries take that as "nothing there".
"""

from __future__ import annotations

import io
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, TypedDict

from invoke.exceptions import CommandTimedOut

from deploy.core.errors import DeployError

Argv = Sequence[str]


ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_escapes(text: str) -> str:
    """Text without terminal escape sequences (colours, `ESC[2K` line clears) and bare CRs."""
    return ANSI_ESCAPE.sub("", text).replace("\r\n", "\n").replace("\r", "")


def verbose_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """DEPLOY_VERBOSE=1 (set by `-v`/`--echo`): print every command."""
    value = (os.environ if environ is None else environ).get("DEPLOY_VERBOSE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def set_verbose(flag: bool, context: object = None) -> None:
    """A task's `-v` flag, or Invoke's/Fabric's own `--echo`: DEPLOY_VERBOSE=1 for the run."""
    run = getattr(getattr(context, "config", None), "run", None)
    if flag or getattr(run, "echo", False):
        os.environ["DEPLOY_VERBOSE"] = "1"


@dataclass
class Result:
    """What a command left behind: exit code and captured output (local and remote alike)."""

    command: str
    exited: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


def sh(script: str) -> list[str]:
    """An argv that runs a small shell script (whose own words are already quoted)."""
    return ["sh", "-c", script]


# Shorter secrets are never redacted: they would match inside ordinary words ("ne***t
# deploy" for a secret "x"); the settings refuse them, `fab env set` warns.
MIN_REDACTED = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each whole occurrence of a secret replaced by '***': one not inside a
    longer run of letters and digits (a secret's prefix of a longer word stays)."""
    for secret in secrets:
        if len(secret) >= MIN_REDACTED:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


# The runner whose phase line is open (written without its newline yet): one per process,
# as the laptop's and the VMs' runners share the terminal.
_open_line: dict[str, Runner] = {}


class RunOptions(TypedDict, total=False):
    """Runner.run's keyword arguments, for the wrappers that pass them on (the remote Vm)."""

    stdin: str | None
    check: bool
    hide: bool
    quiet: bool
    timeout: float | None
    what: str
    fix: str
    cwd: str | None
    env: dict[str, str] | None


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
        echo: bool | None = None,
    ) -> None:
        self.target = target
        self.cwd = cwd
        self.echo = verbose_from_env() if echo is None else echo
        self.where = where
        self.dry_run = dry_run
        self.secrets = [s for s in secrets if s]
        self.out = out or sys.stdout
        self.clock = clock
        self.history: list[str] = []
        if hasattr(target, "before_output"):
            target.before_output = self.end_line

    def say(self, message: str) -> None:
        self.end_line()
        print(f"[{self.where}] {redact(message, self.secrets)}", file=self.out, flush=True)

    @property
    def line_open(self) -> bool:
        """This runner's phase line is being written (no newline yet)."""
        return _open_line.get("runner") is self

    def start_part(self, name: str) -> None:
        """Write a part's name on the phase line as it starts (` · ` before it, or `[where] `
        on a fresh line)."""
        self._write_on_line(name, " · ")

    def end_part(self, name: str, outcome: str) -> None:
        """Write how the part `name` ended: on its line if nothing was printed since it
        started, else on a new line that names it again."""
        if not outcome:
            return
        if self.line_open:
            self._write_on_line(outcome, " ")
        else:
            self._write_on_line(f"{name} {outcome}", " · ")

    def _write_on_line(self, text: str, separator: str) -> None:
        text = redact(text, self.secrets)
        if self.line_open:
            text = separator + text
        else:
            self.end_line()  # another runner's line (the laptop's, around a VM's)
            text = f"[{self.where}] {text}"
        self.out.write(text)
        self.out.flush()
        _open_line["runner"] = self

    @staticmethod
    def end_line() -> None:
        """End the phase line under way (any runner's), before anything else is printed."""
        runner = _open_line.pop("runner", None)
        if runner is not None:
            runner.out.write("\n")
            runner.out.flush()

    def interactive(self, argv: Argv, cwd: str = "") -> int:
        """Run `argv` (in `cwd`) with a terminal: the remote shell's `interactive` (a pty of
        its own, this terminal's keys passed through); its exit code. Printed like `run`."""
        command = shlex.join(argv)
        if cwd:
            command = f"cd {shlex.quote(cwd)} && {command}"
        self.history.append(command)
        self.end_line()
        if self.dry_run or self.echo:
            self.say(f"$ {command}  (with a terminal)")
        if self.dry_run:
            return 0
        if not hasattr(self.target, "interactive"):
            raise DeployError(f"{self.where} cannot run a command with a terminal",
                              "run it on a VM (`fab`)")
        return int(self.target.interactive(command))

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
        """Run `argv` (in `cwd`, default the runner's; the remote shell is in app_dir already;
        local runs may replace the environment with `env`). With `check`, a non-zero exit
        raises DeployError(what, fix)."""
        command = shlex.join(argv)
        enters = getattr(self.target, "enters_dirs", False)  # the remote shell does the cd
        extra: dict[str, Any] = {"cwd": cwd} if enters and cwd is not None else {}
        cwd = self.cwd if cwd is None else cwd
        if cwd and not enters:
            command = f"cd {shlex.quote(cwd)} && {command}"
        self.history.append(command)
        if not (hide or quiet or enters):
            self.end_line()  # the command's own output streams (the remote shell says when)
        if self.dry_run or self.echo:
            self.say(f"$ {command}" + (" < (stdin)" if stdin is not None else ""))
        if self.dry_run:
            return Result(command, 0)
        if env is not None:
            extra.update(env=env, replace_env=True)
        if not enters:
            extra["echo"] = False  # Invoke's own echo (`inv --echo`): this runner prints it
        started = self.clock()
        try:
            raw = self.target.run(
                command,
                warn=True,
                hide=True if hide or quiet else None,
                in_stream=io.StringIO(stdin) if stdin is not None else False,
                timeout=timeout,
                **extra,
            )
        except CommandTimedOut:
            raise DeployError(
                what or f"command timed out after {timeout:.0f}s ({self.where}): {command}",
                fix or "look at why it hangs, or raise the timeout in deploy.toml",
            ) from None
        result = Result(command, raw.exited, raw.stdout, raw.stderr)
        took = self.clock() - started
        if self.echo and not quiet:
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
