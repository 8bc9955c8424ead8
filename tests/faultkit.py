"""Helpers for the fault campaign (tests/test_faults.py): a probe that watches the app while a
deploy runs, ways to catch a deploy in one phase on the VM and break something right then, the
services to break (SSH session, registry, Docker engine, disk), and the campaign's table.

The faults hit sandbox VMs of their own (conftest.FAULT_VMS): their engines, their sshd
sessions, their disks. A VM shares this machine's kernel: its processes are read from /proc, its
files through its laptop-side directory. Whatever a fault stops, the probe thread is stopped and
every service is restored in a `finally`. A fault's row names the example it ran on (sqlite:
example/, postgres: example-postgres/); rows are counted in that example's database.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from conftest import EXAMPLE, child_env
from vmkit import App, Images, buildx, checked, docker, make_app_repo, run

from sandbox import box as sandbox_mod
from sandbox.ports import free_port
from sandbox.vms import Vm

# --------------------------------------------------------------------------- extra images

HALF_MIGRATION = '''"""a migration that changes the schema, then fails halfway

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite runs DDL outside the transaction: both changes stay when the migration fails.
    # Postgres runs it inside Alembic's transaction: the failure rolls both back.
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("items", sa.Column("half", sa.String(20), nullable=True))
    raise RuntimeError("migration 0002 failed halfway")


def downgrade() -> None:
    pass
'''


@dataclass
class FaultImages:
    """Variants of the session's images, under the same repository."""

    crash: str  # v1 whose container exits 1 at start
    half: str  # v1 plus a migration that creates a table and a column, then raises
    big: str  # v2 plus a 48 MB layer of random bytes: a pull that takes a while


def build_fault_images(root: Path, images: Images, source: Path = EXAMPLE) -> FaultImages:
    """The fault variants of an example's images (example/ unless `source` names another)."""
    repo = make_app_repo(root / "fault-app", source)
    ignore = shutil.ignore_patterns(".git")
    crash_dir, half_dir, big_dir = root / "crash", root / "half", root / "big"
    for d in (crash_dir, half_dir, big_dir):
        shutil.copytree(repo, d, ignore=ignore)
    dockerfile = crash_dir / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + '\nCMD ["python", "-c", '
                          '"import sys; sys.exit(\'crashing at start\')"]\n')
    (half_dir / "migrations" / "versions" / "0002_half.py").write_text(HALF_MIGRATION)
    shutil.copytree(source / "v2", big_dir, dirs_exist_ok=True)
    dockerfile = big_dir / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\nRUN head -c 48000000 /dev/urandom > "
                          "/opt/ballast.bin\n")
    out = FaultImages(crash=f"{images.v1}-crash", half=f"{images.v1}-half",
                      big=f"{images.v2}-big")
    for tag, context in ((out.crash, crash_dir), (out.half, half_dir), (out.big, big_dir)):
        buildx(images.ref(tag), context)
        checked(docker("push", "--quiet", images.ref(tag)))
    return out


def forget_locally(ref: str, vm: Vm) -> None:
    """Remove an image from the VM's engine under every name it has there (its tag, and the
    digest reference a deploy or rollback leaves), so that its next pull downloads the layers."""
    image_id = run(vm.docker("image", "inspect", "--format", "{{.Id}}", ref)).stdout.strip()
    run(vm.docker("image", "rm", "--force", image_id or ref))


# --------------------------------------------------------------------------- waiting


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.01,
               what: str = "") -> object:
    """Poll `check()` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or check}")
        time.sleep(interval)


# --------------------------------------------------------------------------- VM processes


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (its children, theirs, ...), from /proc's children lists."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def processes(needle: str, cwd: str | None = None, under: int | None = None) -> list[int]:
    """pids whose command line contains `needle` (and whose working dir is `cwd`); only those
    below process `under` when given (a fault's poll every 10 ms reads a few files, not all
    of /proc)."""
    found = []
    me = os.getpid()
    pids = descendants(under) if under else \
        [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                args = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if needle not in args:
                continue
            if cwd is not None and os.readlink(f"/proc/{pid}/cwd") != cwd:
                continue
        except OSError:
            continue
        found.append(pid)
    return found


def on_vm(vm: Vm, needle: str, cwd: str | None = None) -> list[int]:
    """processes() among the commands SSH runs on `vm`: those below the VM's sshd."""
    return processes(needle, cwd, sandbox_mod.read_pid(vm.pid_file("sshd")))


@dataclass(frozen=True)
class Phase:
    """A phase of a deploy, recognised by the process it runs on the VM."""

    name: str
    needle: str
    in_app_dir: bool = False

    def running(self, app: App) -> bool:
        """Whether the VM runs the phase's process now: the tool's commands run below the
        VM's sshd."""
        return bool(on_vm(app.machine, self.needle, app.app_dir if self.in_app_dir else None))


def phases(app: App, tag: str) -> dict[str, Phase]:
    project = f"--project-name {app.project} "
    # SQLite: the helper's cp of the file; Postgres: its backup-stdout running pg_dump
    backup = "backup-stdout backups/" if app.postgres else "cp -p data/app.db backups/"
    return {
        "pull": Phase("pull", f"docker pull --quiet {app.images.ref(tag)}"),
        "backup": Phase("backup", backup, in_app_dir=True),
        "migrate": Phase("migrate", project + "run --rm"),
        # the switch (a Postgres deploy also runs `up -d --no-deps --no-recreate db` first)
        "up": Phase("up", project + "up -d --remove-orphans"),
        "health": Phase("health", "health-state", in_app_dir=True),
    }


# --------------------------------------------------------------------------- SSH sessions


def _ss(netns: Path | None = None) -> list[tuple[str, str, list[int]]]:
    """Established TCP connections to or from port 22 (the VMs' sshd): (local, peer, pids),
    seen from the laptop's network, or from inside the VM's (`netns`)."""
    enter = ["nsenter", f"--net={netns}"] if netns else []
    out = subprocess.run([*enter, "ss", "-tnpH", "state", "established",
                          "( dport = :22 or sport = :22 )"],
                         capture_output=True, text=True, timeout=10, check=False).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        addrs = [p for p in parts if re.fullmatch(r"[\d.]+:\d+|\[[\w:.]+\]:\d+", p)]
        if len(addrs) < 2:
            continue
        rows.append((addrs[0], addrs[1], [int(p) for p in re.findall(r"pid=(\d+)", line)]))
    return rows


def ssh_session_pids(client_pid: int, vm: Vm) -> list[int]:
    """The VM-side sshd processes serving the SSH connection(s) of local process `client_pid`.

    Matched by the client's address: its socket on the laptop (local 10.213.0.1:P -> VM:22) is
    the sshd's peer inside the VM (local VM:22 <- 10.213.0.1:P). Never the sshd listener,
    which holds no connected socket.
    """
    client_ends = {local for local, peer, pids in _ss()
                   if client_pid in pids and peer == f"{vm.address}:22"}
    listener = sandbox_mod.read_pid(vm.pid_file("sshd"))
    return sorted({pid for local, peer, pids in _ss(vm.netns_file) if peer in client_ends
                   for pid in pids if pid not in (listener, client_pid)})


def cut_ssh(client_pid: int, vm: Vm) -> list[int]:
    """Kill the VM-side sshd session process of `client_pid`'s connection: the link drops."""
    pids = ssh_session_pids(client_pid, vm)
    assert pids, f"no sshd session serves process {client_pid}: {_ss(vm.netns_file)}"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


# --------------------------------------------------------------------------- the probe


@dataclass
class Sample:
    at: float
    stage: str
    version: str | None  # None: no answer or not 200
    status: str


class Probe:
    """GET the app's /version every 50 ms in a thread, tagging each answer with a stage."""

    def __init__(self, url: str, interval: float = 0.05,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.interval = interval
        self.headers = headers or {}  # behind Caddy: the app's Host
        self.stage = "before"
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            version, status = None, ""
            try:
                request = urllib.request.Request(self.url, headers=self.headers)
                with urllib.request.urlopen(request, timeout=1) as response:
                    status = str(response.status)
                    version = str(json.load(response).get("version"))
            except urllib.error.HTTPError as exc:
                status = str(exc.code)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            self.samples.append(Sample(started, self.stage, version, status))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def of(self, stage: str) -> list[Sample]:
        return [s for s in self.samples if s.stage == stage]

    def versions(self, stage: str) -> list[str]:
        """The versions served in `stage`, one entry per change (1, 2, 1: switched back)."""
        seen: list[str] = []
        for s in self.of(stage):
            if s.version and (not seen or seen[-1] != s.version):
                seen.append(s.version)
        return seen

    def failures(self, stage: str) -> int:
        return sum(1 for s in self.of(stage) if s.version is None)

    def summary(self, stage: str) -> str:
        samples = self.of(stage)
        versions = "→".join(self.versions(stage)) or "none"
        return f"{versions} ({len(samples)} req, {self.failures(stage)} failed)"


# --------------------------------------------------------------------------- a running tool


STARTED: list[Running] = []


def stop_all() -> None:
    """Kill every tool child still running (a test that failed half-way leaves none behind)."""
    while STARTED:
        run = STARTED.pop()
        if run.alive():
            run.proc.send_signal(signal.SIGCONT)
            run.proc.kill()
            run.proc.wait(timeout=10)


class Running:
    """A `fab`/`inv` child whose output is collected by a thread (no blocked pipe)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        STARTED.append(self)
        self.pid = self.proc.pid
        self.chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.chunks.append(line)

    @property
    def output(self) -> str:
        return "".join(self.chunks)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 180) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._reader.join(timeout=10)
        return code, self.output

    def when(self, check: Callable[[], object], action: Callable[[], object], what: str,
             timeout: float = 120, interval: float = 0.01) -> object:
        """Poll `check` every `interval` while the tool runs; run `action` once it is true."""
        deadline = time.monotonic() + timeout
        while not check():
            if not self.alive():
                raise AssertionError(f"the tool exited before {what}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout:.0f}s:\n"
                                     + self.output)
            time.sleep(interval)
        return action()


def start_fab(app: App, *args: str, env: dict[str, str] | None = None) -> Running:
    return Running([sys.executable, "-m", "fabric", *args], app.repo,
                   child_env({**app.env, **(env or {})}))


def start_inv(app: App, *args: str, env: dict[str, str] | None = None) -> Running:
    return Running([sys.executable, "-m", "invoke", *args], app.repo,
                   child_env({**app.env, **(env or {})}))


# --------------------------------------------------------------------------- services


FORWARD = Path(sandbox_mod.__file__).resolve().parent / "forward.py"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


class RegistryDoor:
    """A second address of the laptop's registry, 127.0.0.1:PORT here and on `vm`, each a
    forwarder (sandbox/forward.py) to 127.0.0.1:5000. An app whose image is named with it
    reaches the registry only through it: `close()` is that app's registry going down (its
    connections refused here, dropped on the VM), while every other test goes on using
    127.0.0.1:5000."""

    def __init__(self, vm: Vm, logs: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logs = logs
        self._here: subprocess.Popen | None = None
        self._on_vm = self._forward("vm", "--listen-netns", str(vm.netns_file), str(self.port),
                                    self.address)
        wait_until(lambda: "listening" in (logs / "door-vm.log").read_text(), 10, 0.05,
                   "the VM's forwarder")
        self.open()

    def _forward(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"door-{name}.log", "w") as log:
            return subprocess.Popen([sys.executable, str(FORWARD), *args], stdout=log,
                                    stderr=subprocess.STDOUT)

    def open(self) -> None:
        self._here = self._forward("here", str(self.port), "127.0.0.1:5000")
        wait_until(lambda: _listening(self.port), 10, 0.05, "the registry's door to open")

    def close(self) -> None:
        """The registry down for whoever uses this address (SIGKILL: no goodbye)."""
        if self._here is not None:
            self._here.kill()
            self._here.wait(timeout=10)
            self._here = None
        wait_until(lambda: not _listening(self.port), 10, 0.05, "the registry's door to close")

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        """The registry down for the block, always back after it."""
        try:
            self.close()
            yield
        finally:
            self.open()

    def remove(self) -> None:
        self.close()
        self._on_vm.kill()
        self._on_vm.wait(timeout=10)


def running_containers(vm: Vm) -> set[str]:
    return set(run(vm.docker("ps", "-q", "--no-trunc")).stdout.split())


def kill_engine(vm: Vm, sig: int = signal.SIGTERM) -> int:
    """Stop the VM's dockerd (never the laptop's) with `sig`: SIGTERM is what a
    `systemctl restart docker` does; it stops the containers first."""
    pid = sandbox_mod.read_pid(vm.pid_file("dockerd"))
    assert pid and sandbox_mod.alive(pid, "dockerd"), f"no dockerd runs on {vm.name}"
    os.kill(pid, sig)
    wait_until(lambda: not sandbox_mod.alive(pid, "dockerd"), 60, 0.05, "dockerd to exit")
    return pid


def restore_engine(vm: Vm, were_running: AbstractSet[str] = frozenset(), wait: float = 30
                   ) -> None:
    """Start the VM's engine again; any container that ran before and is not back within `wait`
    seconds (its restart policy did not bring it back) is started, so that nothing else on
    that VM stays down."""
    sandbox_mod.up_vm(sandbox_mod.sandbox(), vm.index)
    were_running = were_running & set(run(vm.docker("ps", "-aq", "--no-trunc")).stdout.split())
    with contextlib.suppress(AssertionError):
        wait_until(lambda: were_running <= running_containers(vm), wait, 0.5,
                   "restart policies")
    missing = were_running - running_containers(vm)
    if missing:
        run(vm.docker("start", *sorted(missing)), timeout=120)


@contextlib.contextmanager
def full_tmpfs(app: App, relative: str, size: str = "16k") -> Iterator[Path]:
    """A tiny tmpfs mounted on the app's `relative` directory on the VM (inside the VM's mount
    namespace, where the deploy sees it), filled up; unmounted after the block."""
    app.vm(relative).mkdir(parents=True, exist_ok=True)
    path = f"{app.app_dir}/{relative}"
    checked(app.vm_run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path))
    try:
        app.vm_run("dd", "if=/dev/zero", f"of={path}/filler", "bs=1k", "count=1024")
        yield app.vm(relative)
    finally:
        app.vm_run("umount", "-l", path)


class PsSampler:
    """Every command line on this machine (both sides: the VM is here too), every ~20 ms."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.lines: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ps", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
            self.lines.update(out.splitlines())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    fault: str
    app: str = "sqlite"  # the example it ran on: sqlite (example/) or postgres
    before: str = ""
    during: str = ""
    after: str = ""
    rows_before: str = ""
    rows_after: str = ""
    lock: str = ""
    exit: str = ""
    message: str = ""
    then: str = ""
    result: str = "FAILED"
    requests: int = 0  # probe requests while the faulted command ran
    failed: int = 0  # of which got no 200 answer


RESULTS: list[Row] = []
COLUMNS = [
    ("fault", "fault"), ("app", "example"), ("before", "served before"),
    ("during", "during (probe)"),
    ("after", "after"), ("rows_before", "rows before"), ("rows_after", "rows after"),
    ("lock", "lock after"), ("exit", "exit"), ("message", "message shown"),
    ("then", "then"), ("result", "test"),
]


def shorten(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def first_message(out: str) -> str:
    """The first line the user is told about the failure (error:, interrupted), shortened."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("error:", "interrupted")):
            return shorten(line)
    return shorten(lines[-1]) if lines else ""


def probe_summary() -> str:
    """One line for all rows, then one per example."""
    lines = []
    for name in ["all", *sorted({r.app for r in RESULTS})]:
        rows = [r for r in RESULTS if name in ("all", r.app)]
        probed = [r for r in rows if r.requests]
        requests, failed = sum(r.requests for r in probed), sum(r.failed for r in probed)
        clean = sum(1 for r in probed if not r.failed)
        passed = sum(1 for r in rows if r.result == "ok")
        lines.append(f"{name}: {len(rows)} rows, {passed} ok. Probe (GET /version every 50 "
                     f"ms): {requests} requests during {len(probed)} faulted commands, {failed} "
                     f"without a 200 answer; {clean} of {len(probed)} saw no failed request.")
    return "\n".join(lines)


def table_text() -> str:
    rows = [[h for _, h in COLUMNS]] + [[getattr(r, k) for k, _ in COLUMNS] for r in RESULTS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join([*out, "", probe_summary()])


def table_markdown() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|") or " "

    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(cell(getattr(r, k)) for k, _ in COLUMNS) + " |" for r in RESULTS]
    summary = probe_summary().replace("\n", "\n\n")  # a paragraph each
    return "\n".join([head, rule, *body, "", summary]) + "\n"


# --------------------------------------------------------------------------- one fault


def served(app: App) -> str:
    """The version /version answers now ('none' if it does not answer 200)."""
    try:
        status, body = app.get("/version", timeout=3)
    except (OSError, http.client.HTTPException):
        return "none"
    return str(body.get("version")) if status == 200 and isinstance(body, dict) else "none"


def lock_state(app: App) -> str:
    lock = app.vm(".deploy/lock")
    if not lock.exists():
        return "free"
    try:
        holder = json.loads((lock / "holder.json").read_text())
    except (OSError, ValueError):
        return "held (no holder.json)"
    return f"held by {holder.get('holder', '?')} ({holder.get('action', '?')} " \
           f"{holder.get('tag', '?')})"


def row_count(app: App) -> int:
    return len(app.item_names())


def example_of(app: App) -> str:
    return "postgres" if app.postgres else "sqlite"


@dataclass
class Fault:
    """One fault of the campaign: state before, a probe through it, state after, one row."""

    app: App
    name: str
    row: Row = field(init=False)
    probe: Probe = field(init=False)
    names_before: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.row = Row(self.name, example_of(self.app))
        self.probe = Probe(self.app.url("/version"))

    def __enter__(self) -> Fault:
        self.row.before = served(self.app)
        self.names_before = self.app.item_names()
        self.row.rows_before = str(len(self.names_before))
        self.probe.__enter__()
        self.probe.stage = "during"
        return self

    def done(self, code: int, out: str) -> None:
        """The faulted command ended: note what the user saw and what state is left."""
        self.probe.stage = "after"
        self.row.exit = str(code)
        self.row.message = first_message(out)
        self.row.during = self.probe.summary("during")
        self.row.requests = len(self.probe.of("during"))
        self.row.failed = self.probe.failures("during")
        self.settle()

    def settle(self) -> None:
        """Record the state as it is now (called again after a recovery step)."""
        self.app.wait_http("/health", timeout=30)
        self.row.after = served(self.app)
        self.row.rows_after = str(row_count(self.app))
        self.row.lock = lock_state(self.app)

    def then(self, text: str) -> None:
        self.row.then = text

    def rows_intact(self) -> None:
        """No row written before the fault is lost."""
        names = self.app.item_names()
        assert names[: len(self.names_before)] == self.names_before, (self.names_before, names)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stop_all()
        self.probe.__exit__()
        if not self.row.during:
            self.row.during = self.probe.summary("during")
        self.row.result = "ok" if exc_type is None else "FAILED"
        RESULTS.append(self.row)
