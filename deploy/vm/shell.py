"""One long-lived `sh` on the VM per connection: each command costs a write, not a new session.

Opening an SSH session channel and starting the user's shell costs tens of milliseconds per
command (more when the login shell reads rc files); a deploy runs a dozen commands. This target
keeps one `sh` open on one channel, writes each command to it, and reads its output up to a
marker line that carries the exit code. It has the `.run()` signature the Runner expects.

The shell enters the app directory once when it opens (`cd app_dir`), so no command carries a
`cd ... &&` prefix; a command that needs another directory names it (`cwd=`).

A command that is interrupted (Ctrl-C, timeout) leaves the shell busy: the channel is closed and
the next command opens a fresh one on the same connection. Terminal escape sequences in what
remote tools print (compose's `ESC[2K` line clears, colours) are dropped.
"""

from __future__ import annotations

import math
import secrets
import select
import shlex
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Literal, TextIO

from fabric import Connection
from invoke.exceptions import CommandTimedOut
from invoke.runners import Result as InvokeResult
from paramiko import Channel, Transport
from paramiko.common import cMSG_GLOBAL_REQUEST
from paramiko.message import Message

from deploy.core.errors import DeployError
from deploy.core.runner import Result, strip_escapes

WAKE_EVERY = 0.1  # seconds between the checks of a silent command's connection and timeout


class ConnectionLost(DeployError):
    """The SSH connection dropped under a command (which may go on running on the VM)."""

    def __init__(self, message: str, fix: str, where: str, reason: str = "") -> None:
        super().__init__(message, fix)
        self.where = where
        self.reason = reason


def transport_of(connection: Connection) -> Transport | None:
    """The connection's SSH transport (None when it is not open)."""
    client = connection.client
    return client.get_transport() if client is not None else None


class RemoteShell:
    """Runs commands through one persistent remote `sh` over a Fabric/paramiko connection."""

    enters_dirs = True  # the Runner passes cwd= instead of a `cd ... &&` prefix

    def __init__(self, connection: Connection, where: str = "", network_timeout: float = 30.0,
                 home: str = "") -> None:
        self.connection = connection
        self.home = home  # entered once per shell; "" stays in the login directory
        self.inside = False
        self.where = where or getattr(connection, "host", "the VM")
        self.channel: Channel | None = None
        # A VM that answers neither output nor an SSH keepalive for this long is lost.
        self.network_timeout = network_timeout
        self.probe_after = max(1.0, network_timeout / 6)
        # called before a command's first line is shown
        self.before_output: Callable[[], None] | None = None

    def _open(self) -> Channel:
        transport = transport_of(self.connection)
        if transport is None or not transport.is_active():
            transport = self._reconnect()
        try:
            channel = transport.open_session(timeout=self.network_timeout)
            channel.exec_command("exec sh")
        except Exception as exc:  # paramiko.SSHException, or the socket closed under it
            raise self._lost("opening a shell", str(exc)) from None
        self.channel = channel
        self.inside = False
        return channel

    def _enter(self, channel: Channel) -> None:
        """`cd app_dir` in the shell itself (not a subshell), once; retried by later commands
        while app_dir does not exist yet (`fab setup` makes it)."""
        if not self.home or self.inside:
            return
        mark = f"__deploy_done_{secrets.token_hex(8)}__"
        channel.sendall(f"cd -- {shlex.quote(self.home)} 2>/dev/null\n__rc=$?; printf "
                        f"'\\n{mark} %s\\n' \"$__rc\"; printf '\\n{mark}\\n' >&2\n".encode())
        self.inside = self._collect(channel, "cd", mark, True, None).exited == 0

    def _reconnect(self) -> Transport:
        """A dropped connection is opened once more (to release the lock, switch back...)."""
        try:
            self.connection.close()
            self.connection.open()
            transport = transport_of(self.connection)
        except Exception:
            transport = None
        if transport is None or not transport.is_active():
            raise ConnectionLost(
                f"the SSH connection to {self.where} was lost and could not be opened again",
                "check the VM and the network, then run the same command again",
                self.where,
            )
        return transport

    def interactive(self, command: str) -> int:
        """Run `command` in a session of its own on the same connection, with a terminal (a
        pty on the VM, sized like ours and resized with it): what is typed goes to it as it
        is typed, Ctrl-C included (sent as the character, to the remote program), and its
        output comes straight to ours. Returns its exit code."""
        transport = transport_of(self.connection)
        if transport is None or not transport.is_active():
            self._reconnect()
        if self.before_output:
            self.before_output()
        result = self.connection.run(command, pty=True, warn=True, echo=False, hide=False)
        return int(result.exited)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def run(self, command: str, warn: bool = True, hide: Any = None,
            in_stream: IO[str] | Literal[False] = False,
            timeout: float | None = None, cwd: str | None = None) -> Result:
        """Run `command` in the app directory (or in `cwd`: "" is the login directory)."""
        channel = self.channel or self._open()
        if cwd is not None:
            command = f"cd -- {shlex.quote(cwd)} && {command}" if cwd else f"cd && {command}"
        else:
            try:
                self._enter(channel)
            except BaseException:
                self.close()
                raise
            if self.home and not self.inside:
                command = f"cd -- {shlex.quote(self.home)} && {command}"
        mark = f"__deploy_done_{secrets.token_hex(8)}__"
        stdin = ""
        if in_stream:
            data = in_stream.read()
            stdin = f"<<'{mark}'\n{data}\n{mark}\n" if data else "</dev/null\n"
        else:
            stdin = "</dev/null\n"
        script = (
            f"( {command}\n) {stdin}"
            f"__rc=$?; printf '\\n{mark} %s\\n' \"$__rc\"; printf '\\n{mark}\\n' >&2\n"
        )
        try:
            channel.sendall(script.encode())
            return self._collect(channel, command, mark, hide, timeout)
        except (OSError, EOFError) as exc:  # the socket closed under the command
            self.close()
            raise self._lost(command[:120], str(exc) or type(exc).__name__) from None
        except BaseException:
            self.close()  # the shell may still be busy: never reuse it
            raise

    def _collect(self, channel: Channel, command: str, mark: str, hide: Any,
                 timeout: float | None) -> Result:
        show = hide is None or hide is False
        out = _Stream(mark, sys.stdout if show else None, self.before_output)
        err = _Stream(mark, sys.stderr if show else None, self.before_output)
        deadline = time.monotonic() + timeout if timeout else None
        alive = _Liveness(self.connection, self.probe_after, self.network_timeout)
        while not (out.done and err.done):
            got = False
            if channel.recv_ready():
                out.feed(channel.recv(65536))
                got = True
            if channel.recv_stderr_ready():
                err.feed(channel.recv_stderr(65536))
                got = True
            if got:
                alive.heard()
                continue
            if not alive.check():
                self.close()
                raise self._lost(command[:120], f"no answer for {self.network_timeout:.0f}s, "
                                 "not even to SSH keepalives; network_timeout sets it")
            if channel.exit_status_ready() or channel.closed:
                out.feed(channel.recv(65536) if channel.recv_ready() else b"")
                if not (out.done and err.done):
                    self.close()
                    raise ConnectionLost(
                        f"the SSH connection to {self.where} was lost while running: "
                        f"{command[:120]}",
                        "check the VM, then run the same command again (a deploy re-run "
                        "is safe; `fab status` shows what is serving)",
                        self.where,
                    )
            if deadline and timeout and time.monotonic() > deadline:
                # Invoke's own Result (its str() shows the hidden output's tail); whole seconds
                raise CommandTimedOut(InvokeResult(stdout=out.text, stderr=err.text,
                                                   command=command, exited=-1,
                                                   hide=("stdout", "stderr")), math.ceil(timeout))
            # Asleep until output (either stream) or the channel's end: a poll every few ms
            # cost a deploy 0.08 s of CPU. Woken at least every WAKE_EVERY s for the keepalive
            # and the timeout.
            wait = WAKE_EVERY if not deadline else max(0.0, min(WAKE_EVERY,
                                                             deadline - time.monotonic()))
            select.select([channel], [], [], wait)
        return Result(command, out.exit_code, out.text, err.text)


    def _lost(self, during: str, reason: str) -> ConnectionLost:
        return ConnectionLost(
            f"the SSH connection to {self.where} was lost while running: {during} ({reason})",
            "check the VM and the network, then run the same command again (a deploy re-run "
            "is safe; `fab status` shows what is serving)",
            self.where, reason,
        )


class _Liveness:
    """SSH keepalives while a command is silent: after `probe_after` seconds without output a
    keepalive@openssh.com request (which the server must answer) goes out; no answer within
    `limit` seconds means the network or the VM is gone."""

    def __init__(self, connection: Connection, probe_after: float, limit: float) -> None:
        self.transport = transport_of(connection)
        self.probe_after = probe_after
        self.limit = limit
        self.last = time.monotonic()
        self.sent = 0.0

    def heard(self) -> None:
        self.last = time.monotonic()
        self.sent = 0.0

    def check(self) -> bool:
        transport = self.transport
        if transport is None or not self.limit:
            return True
        now = time.monotonic()
        if self.sent:
            if transport.completion_event is not None and transport.completion_event.is_set():
                self.heard()
            elif now - self.sent > self.limit:
                return False
        elif now - self.last > self.probe_after:
            self._probe(transport)
            self.sent = now
        return True


    @staticmethod
    def _probe(transport: Transport) -> None:
        """Send keepalive@openssh.com asking for a reply, without waiting for it (paramiko's
        own global_request asks for none unless it also blocks until it comes)."""
        transport.completion_event = threading.Event()
        message = Message()
        message.add_byte(cMSG_GLOBAL_REQUEST)
        message.add_string("keepalive@openssh.com")
        message.add_boolean(True)
        # paramiko's own (private) sender, which its stubs leave out
        transport._send_user_message(message)  # type: ignore[attr-defined]


class _Stream:
    """Accumulates one stream up to the marker line, echoing complete lines when asked."""

    def __init__(self, mark: str, echo: TextIO | None,
                 before_echo: Callable[[], None] | None = None) -> None:
        self.mark = mark
        self.echo = echo
        self.before_echo = before_echo
        self.buffer = ""
        self.lines: list[str] = []
        self.done = False
        self.exit_code = -1

    def feed(self, data: bytes) -> None:
        if self.done or not data:
            return
        self.buffer += data.decode(errors="replace")
        *complete, self.buffer = self.buffer.split("\n")
        for line in map(strip_escapes, complete):
            if line.startswith(self.mark):
                code = line[len(self.mark):].strip()
                self.exit_code = int(code) if code.lstrip("-").isdigit() else 0
                self.done = True
                if self.lines and self.lines[-1] == "":
                    self.lines.pop()  # the newline the marker's printf put before itself
                elif self.lines:
                    self._echo(self.lines[-1])
                return
            if self.lines:
                self._echo(self.lines[-1])  # one line behind: the last may be the marker's
            self.lines.append(line)

    def _echo(self, line: str) -> None:
        if self.echo is not None:
            if self.before_echo is not None:
                self.before_echo()
            print(line, file=self.echo, flush=True)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")
