"""Commands in the app container with a terminal: `fab exec -i`, `fab shell`, and the aliases
of deploy.toml's [aliases] (`fab console`), driven through a pseudo-terminal as a user's
terminal would drive them: keys typed, the echo and the answers read back.

The aliases' checks run without a VM; the rest against the example deployed on the sandbox VM.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import child_env
from vmkit import App, output

from deploy.core import aliases
from deploy.core.errors import DeployError
from deploy.core.settings import load_settings

# --------------------------------------------------------------------------- no VM


def test_aliases_are_checked_names_and_one_line_commands(tmp_path: Path):
    toml = tmp_path / "deploy.toml"
    toml.write_text('[aliases]\nconsole = "python -m app.console"\ndb-shell = "sqlite3 x"\n'
                    '[destinations.staging]\nhost = "s"\n[destinations.staging.aliases]\n'
                    'console = "python -m app.console --staging"\n')
    assert aliases.aliases(load_settings(tmp_path, environ={})) == {
        "console": "python -m app.console", "db-shell": "sqlite3 x"}
    staging = load_settings(tmp_path, environ={"DEPLOY_DESTINATION": "staging"})
    assert aliases.aliases(staging)["console"] == "python -m app.console --staging"
    for table, why in (('Console = "x"', "is not an alias name"),
                       ('"a b" = "x"', "is not an alias name"),
                       ('"-x" = "x"', "is not an alias name"),
                       ('deploy = "x"', "has the name of the task `fab deploy`"),
                       ('console = ""', "must be a command"),
                       ('console = "a\\nb"', "must be a command"),
                       ("console = 3", "must be a command")):
        toml.write_text(f"[aliases]\n{table}\n")
        with pytest.raises(DeployError) as caught:
            aliases.aliases(load_settings(tmp_path, environ={}), frozenset({"deploy"}))
        assert why in caught.value.message, (table, caught.value.message)
        assert "[aliases]" in caught.value.message


# --------------------------------------------------------------------------- a terminal


class Terminal:
    """`fab ARGS` on a pseudo-terminal of its own, as a user's terminal runs it."""

    def __init__(self, app: App, *args: str) -> None:
        env = child_env(app.env)
        env["TERM"] = "xterm"
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: fab, its stdin, stdout and stderr the terminal
            os.chdir(app.repo)
            os.execve(sys.executable, [sys.executable, "-m", "fabric", *args], env)
        self.seen = b""

    def read_until(self, text: str, timeout: float = 120) -> str:
        """Everything shown so far, once `text` was (AssertionError after `timeout`). Line
        ends are compared as `\\n`: each terminal on the way may add its `\\r`."""
        deadline = time.monotonic() + timeout
        while text not in self.text:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never came; the terminal shows:\n{self.text}"
            if not self._read(min(left, 1)):
                break
        assert text in self.text, f"{text!r} never came:\n{self.text}"
        return self.text

    def _read(self, timeout: float) -> bool:
        """Read what is there; False at the end (the other side closed)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the program ended and closed the terminal
            return False
        self.seen += chunk
        return bool(chunk)

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 120) -> int:
        """Read to the end; the exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(1):
            pass
        for _ in range(int(timeout * 10)):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(self.pid, 9)
        raise AssertionError(f"fab did not end; the terminal shows:\n{self.text}")

    @property
    def text(self) -> str:
        return self.seen.decode(errors="replace").replace("\r", "")


@pytest.fixture
def live(make_app, images):
    app = make_app()
    app.fab_ok("setup")
    app.deploy(images.v1)
    return app


PROGRAM = ("import sys; print('tty', sys.stdin.isatty(), flush=True); "
           "name = input('name? '); print('hello', name[::-1]); sys.exit(3)")


def test_exec_with_a_terminal_echoes_answers_and_keeps_the_exit_code(live):
    term = Terminal(live, "exec", "-i", f"python -c \"{PROGRAM}\"")
    term.read_until("name? ")
    term.type("abc\r")  # Enter, as a terminal sends it
    shown = term.read_until("hello cba")
    code = term.wait()
    assert code == 3, term.text
    assert "tty True" in shown  # the container's program had a terminal
    assert "abc" in shown.split("name? ", 1)[1]  # what was typed, echoed back
    # Without -i: no terminal, the same exit code
    proc = live.fab("exec", "python -c 'import sys; print(sys.stdin.isatty()); sys.exit(4)'")
    assert proc.returncode == 4 and "False" in output(proc), output(proc)
    # SIGTERM ends it (Ctrl-C would go to the remote program): exit 143, promptly
    term = Terminal(live, "exec", "-i", "python -q")
    term.read_until(">>> ")
    os.kill(term.pid, signal.SIGTERM)
    started = time.monotonic()
    assert term.wait(timeout=30) == 143, term.text
    assert time.monotonic() - started < 20


def test_an_alias_runs_a_console_and_shell_opens_one(live):
    with open(live.repo / "deploy.toml", "a") as toml:
        toml.write('\n[aliases]\nconsole = "python -q"\n')
    assert "python -q" in live.fab_ok("--list")  # `fab console` is a task of its own
    term = Terminal(live, "console")
    term.read_until(">>> ")
    term.type("6 * 7\r")
    term.read_until("42\n>>> ")  # the answer, and the prompt again
    term.type("import time; time.sleep(90)\r")
    time.sleep(2)
    started = time.monotonic()
    term.type("\x03")  # Ctrl-C reaches the remote Python, which stays
    term.read_until("KeyboardInterrupt\n>>> ", timeout=60)
    assert time.monotonic() - started < 60  # interrupted, not waited out
    term.type("6 * 8\r")
    term.read_until("48")
    term.type("exit()\r")
    assert term.wait() == 0, term.text

    term = Terminal(live, "shell")
    term.read_until("#")  # the container's shell prompt (root)
    term.type("echo $((40 + 2)); exit 5\r")
    term.read_until("42")
    assert term.wait() == 5, term.text

    proc = live.fab("alias", "nope")
    assert proc.returncode == 1 and "error: there is no alias 'nope'" in output(proc)
    with open(live.repo / "deploy.toml", "a") as toml:
        toml.write('status = "x"\n')
    proc = live.fab("--list")
    assert proc.returncode == 1, output(proc)
    assert "error: alias 'status' in [aliases] of deploy.toml has the name of the task " \
        "`fab status`" in output(proc) and "Traceback" not in output(proc)
