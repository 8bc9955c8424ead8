"""Process helpers of the sandbox: run a command, start a daemon with a pid file, stop it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy.core.errors import DeployError

SETUP_FIX = "run .ci/setup (it installs docker.io, docker-registry, openssh-server, debootstrap)"



def run(cmd: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text; never raises on a non-zero exit."""
    try:
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise DeployError(f"{cmd[0]} is not installed", SETUP_FIX) from exc
    except subprocess.TimeoutExpired as exc:
        raise DeployError(
            f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s", "see its log and retry"
        ) from exc


def check(cmd: Sequence[str], what: str, fix: str, timeout: float = 120) -> str:
    """Run a command and return its stdout; raise DeployError naming `what` if it fails."""
    result = run(cmd, timeout=timeout)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        reason = " / ".join(detail) or f"exit {result.returncode}"
        raise DeployError(f"{what} failed: {reason}", fix)
    return result.stdout


def exe(name: str) -> str:
    """Full path of a program, looking in sbin too (root's PATH may lack it)."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DeployError(f"{name} is not installed", SETUP_FIX)


def start_detached(cmd: Sequence[str], log: Path, pid_file: Path) -> int:
    """Start a long-running program in its own session, log to `log`, record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    """The pid in a pid file, or None if there is no readable pid."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None, program: str) -> bool:
    """True if `pid` is a live process of executable `program` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]  # executable name, cut to 15 chars
    state = stat[stat.rindex(")") + 1 :].split()[0]
    return comm == program[:15] and state != "Z"  # a zombie is as good as dead


def wait(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `check()` until it returns true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def stop(pid_file: Path, program: str, timeout: float = 30) -> str:
    """SIGTERM the process in `pid_file` if it is still `program`; say what happened."""
    pid = read_pid(pid_file)
    if not alive(pid, program):
        pid_file.unlink(missing_ok=True)
        return "none started by the sandbox is running"
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    if not wait(lambda: not alive(pid, program), timeout):
        os.kill(pid, signal.SIGKILL)
        wait(lambda: not alive(pid, program), 5)
    pid_file.unlink(missing_ok=True)
    return f"stopped (pid {pid})"


def tail(path: Path, lines: int = 5) -> str:
    """Last lines of a log file, for error messages."""
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def sshd_common_options() -> list[str]:
    """sshd settings every sandbox sshd shares: root by key only, a verbose log (one
    "Connection from" line per connection, which tests count), room for many sessions."""
    return [
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "LogLevel VERBOSE",
        "MaxSessions 50",
        "MaxStartups 50:30:100",
        "AcceptEnv LANG LC_*",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
    ]
