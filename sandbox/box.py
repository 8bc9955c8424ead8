"""An embedded deploy target on this machine: a Docker engine, a registry and an SSH "VM".

`python -m sandbox up` brings up, idempotently:

- engine:   `dockerd` (only if `docker info` fails), log in <state>/dockerd.log
- registry: `docker-registry` on 127.0.0.1:5000, storage in <state>/registry
- images:   python:3.11-slim, postgres:17 (= pgvector/pgvector:pg17), caddy:2, built offline
            (sandbox/images.py: no Docker Hub needed)
- sshd:     a private sshd on 127.0.0.1:2222 that lets root in with <state>/id_ed25519
- VMs:      vm1..vmN (`--vms N`), each with its own network, /srv, Docker engine and sshd on
            10.213.0.(10+i):22 (sandbox/vms.py says what they are and are not)

Everything lives in the state directory (DEPLOY_SANDBOX_DIR, default ~/.deploy-sandbox)
except the rootfs tarball, cached in DEPLOY_SANDBOX_CACHE (default /var/cache/deploy-sandbox)
so that it survives re-clones of the repo. `down` stops only what `up` started (by pid file).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.commands import docker
from deploy.core.errors import DeployError
from sandbox import images
from sandbox import vms as vmlib
from sandbox.proc import (
    SETUP_FIX,
    alive,
    check,
    exe,
    port_open,
    read_pid,
    run,
    sshd_common_options,
    start_detached,
    stop,
    tail,
    wait,
)

UNSET = Path()  # marks a Sandbox path field to derive from state_dir
DOCKER_PID_FILES = (
    (Path("/var/run/docker.pid"), "dockerd"),
    (Path("/var/run/docker/containerd/containerd.pid"), "containerd"),
)


@dataclass(frozen=True)
class Sandbox:
    """Where the sandbox lives and how to reach it. Paths left empty derive from state_dir."""

    state_dir: Path
    registry: str = "127.0.0.1:5000"
    ssh_host: str = "127.0.0.1"
    ssh_port: int = 2222
    ssh_user: str = "root"
    key_file: Path = UNSET  # private key root on the sandbox VM accepts: state_dir/id_ed25519
    known_hosts: Path = UNSET  # holds the sandbox sshd host key(s): state_dir/known_hosts
    sshd_log: Path = UNSET  # LogLevel VERBOSE: one "Connection from" line per connection
    cache_dir: Path = Path("/var/cache/deploy-sandbox")  # rootfs tarballs, survive re-clones

    def vm(self, index: int) -> vmlib.Vm:
        """Sandbox VM number `index` (vm1 is 10.213.0.11)."""
        return vmlib.vm(self.state_dir, index)

    def __post_init__(self) -> None:
        for name, default in (
            ("key_file", "id_ed25519"),
            ("known_hosts", "known_hosts"),
            ("sshd_log", "sshd.log"),
        ):
            if getattr(self, name) == UNSET:
                object.__setattr__(self, name, self.state_dir / default)


def sandbox() -> Sandbox:
    """The sandbox configuration from the environment (no side effects)."""
    state = Path(os.environ.get("DEPLOY_SANDBOX_DIR", "~/.deploy-sandbox")).expanduser()
    port = os.environ.get("DEPLOY_SANDBOX_SSH_PORT", "2222")
    if not port.isdigit():
        raise DeployError(
            f"DEPLOY_SANDBOX_SSH_PORT={port!r} is not a port number",
            "set DEPLOY_SANDBOX_SSH_PORT to a free TCP port such as 2222, or unset it",
        )
    cache = Path(os.environ.get("DEPLOY_SANDBOX_CACHE", "/var/cache/deploy-sandbox"))
    return Sandbox(state_dir=state.absolute(), ssh_port=int(port), cache_dir=cache.absolute())


# --------------------------------------------------------------------------- engine


def dockerd_cmd() -> list[str]:
    """Start the Docker engine in the foreground (we detach it ourselves)."""
    return [exe("dockerd")]


def engine_running() -> bool:
    """True if `docker info` reaches an engine."""
    try:
        return run(docker.engine_info(), timeout=30).returncode == 0
    except DeployError:
        return False


def _clear_stale_pid_files() -> None:
    """Drop dockerd/containerd pid files left by a killed engine whose pid may now be reused.

    dockerd refuses to start while /var/run/docker.pid names a live process, whatever it is.
    """
    for pid_file, program in DOCKER_PID_FILES:
        if pid_file.exists() and not alive(read_pid(pid_file), program):
            pid_file.unlink(missing_ok=True)


def ensure_engine(sb: Sandbox) -> str:
    """Make sure a Docker engine answers; start dockerd in the background if none does."""
    if not shutil.which("docker"):
        raise DeployError("the docker CLI is not installed", SETUP_FIX)
    if engine_running():
        return "running"
    sb.state_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale_pid_files()
    log = sb.state_dir / "dockerd.log"
    pid = start_detached(dockerd_cmd(), log, sb.state_dir / "dockerd.pid")
    wait(lambda: not alive(pid, "dockerd") or engine_running(), 60, interval=0.5)
    if not alive(pid, "dockerd"):
        raise DeployError(
            f"dockerd exited at start: {tail(log)}",
            f"read {log}; a stale /var/run/docker.pid may name a live process",
        )
    if not engine_running():
        raise DeployError(
            f"dockerd (pid {pid}) did not answer `docker info` within 60s", f"read {log}"
        )
    return f"started (pid {pid}, log {log})"


# --------------------------------------------------------------------------- registry


def registry_config(sb: Sandbox) -> str:
    """docker-registry (distribution 2.x) config: filesystem storage, loopback only."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {sb.state_dir / 'registry'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {sb.registry}\n"
    )


def registry_cmd(config: Path) -> list[str]:
    """Serve the registry with `config`."""
    return [exe("docker-registry"), "serve", str(config)]


def registry_up(sb: Sandbox) -> bool:
    """True if the registry's /v2/ endpoint answers 200."""
    try:
        with urllib.request.urlopen(f"http://{sb.registry}/v2/", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ensure_registry(sb: Sandbox) -> str:
    """Make sure a registry answers on sb.registry; start docker-registry if not."""
    if registry_up(sb):
        return f"running at http://{sb.registry}"
    host, _, port = sb.registry.rpartition(":")
    if port_open(host, int(port)):
        raise DeployError(
            f"something on {sb.registry} is not a Docker registry (/v2/ did not answer 200)",
            f"stop whatever listens on {sb.registry}",
        )
    sb.state_dir.mkdir(parents=True, exist_ok=True)
    (sb.state_dir / "registry").mkdir(exist_ok=True)
    config = sb.state_dir / "registry.yml"
    config.write_text(registry_config(sb))
    log = sb.state_dir / "registry.log"
    pid = start_detached(registry_cmd(config), log, sb.state_dir / "registry.pid")
    if not wait(lambda: registry_up(sb), 30):
        raise DeployError(
            f"docker-registry did not answer on http://{sb.registry}/v2/ within 30s: {tail(log)}",
            f"read {log}",
        )
    return f"started at http://{sb.registry} (pid {pid})"


# --------------------------------------------------------------------------- sshd


def _sshd_files(sb: Sandbox, host: str, port: int) -> tuple[Path, Path, Path]:
    """(config, pid file, log) of the sshd on host:port; the default one keeps short names."""
    if (host, port) == (sb.ssh_host, sb.ssh_port):
        stem = "sshd"
    else:
        stem = f"sshd-{host}-{port}"
    d = sb.state_dir
    return d / f"{stem}_config", d / f"{stem}.pid", d / f"{stem}.log"


def keygen_cmd(path: Path, comment: str) -> list[str]:
    """Generate an ed25519 key pair without a passphrase."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def sshd_config(sb: Sandbox, host: str, port: int, pid_file: Path) -> str:
    """A private sshd: loopback only, root by key only, verbose log, room for many sessions."""
    return "\n".join(
        [
            f"Port {port}",
            f"ListenAddress {host}",
            f"HostKey {sb.state_dir / 'ssh_host_ed25519_key'}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {sb.state_dir / 'authorized_keys'}",
            *sshd_common_options(),
        ]
    )


def sshd_cmd(config: Path, log: Path) -> list[str]:
    """Start sshd (it daemonizes itself) with our config, logging to `log`."""
    return [exe("sshd"), "-f", str(config), "-E", str(log)]


def known_hosts_line(host: str, port: int, host_pubkey: str) -> str:
    """A known_hosts entry; ports other than 22 use the bracketed [host]:port form."""
    name = host if port == 22 else f"[{host}]:{port}"
    keytype, key = host_pubkey.split()[:2]
    return f"{name} {keytype} {key}"


def ssh_cmd(
    sb: Sandbox, *remote: str, host: str | None = None, port: int | None = None
) -> list[str]:
    """ssh to the sandbox VM as root with its key, checking its host key strictly."""
    options = {
        "IdentitiesOnly": "yes",
        "BatchMode": "yes",
        "UserKnownHostsFile": str(sb.known_hosts),
        "StrictHostKeyChecking": "yes",
    }
    flags = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    target = f"{sb.ssh_user}@{host or sb.ssh_host}"
    return ["ssh", "-i", str(sb.key_file), *flags, "-p", str(port or sb.ssh_port), target, *remote]


def _ensure_keys(sb: Sandbox) -> str:
    """Create the host key, client key and authorized_keys once; return the host pubkey."""
    sb.state_dir.mkdir(parents=True, exist_ok=True)
    sb.state_dir.chmod(0o700)
    host_key = sb.state_dir / "ssh_host_ed25519_key"
    for key, comment in ((host_key, "deploy-sandbox-host"), (sb.key_file, "deploy-sandbox")):
        if not key.is_file():
            key.with_name(key.name + ".pub").unlink(missing_ok=True)
            check(keygen_cmd(key, comment), f"ssh-keygen for {key}", SETUP_FIX)
    auth = sb.state_dir / "authorized_keys"
    client_pub = sb.key_file.with_name(sb.key_file.name + ".pub").read_text()
    if not auth.is_file() or auth.read_text() != client_pub:
        auth.write_text(client_pub)
        auth.chmod(0o600)
    return host_key.with_name(host_key.name + ".pub").read_text().strip()


def _write_known_hosts(sb: Sandbox, host: str, port: int, host_pubkey: str) -> None:
    """Put host:port's entry into known_hosts, replacing any older entry for it."""
    line = known_hosts_line(host, port, host_pubkey)
    name = line.split()[0]
    old = sb.known_hosts.read_text().splitlines() if sb.known_hosts.is_file() else []
    kept = [entry for entry in old if entry.split(" ", 1)[0] != name]
    new = "\n".join([*kept, line]) + "\n"
    if not sb.known_hosts.is_file() or sb.known_hosts.read_text() != new:
        # renamed into place: an SSH client reading it meanwhile (another test process)
        # sees the old file or the new one, never an empty one
        tmp = sb.known_hosts.with_name(f"{sb.known_hosts.name}.{os.getpid()}.tmp")
        tmp.write_text(new)
        os.replace(tmp, sb.known_hosts)


def sshd_running(sb: Sandbox, host: str | None = None, port: int | None = None) -> bool:
    """True if our sshd for host:port is alive and accepting connections."""
    host, port = host or sb.ssh_host, port or sb.ssh_port
    _, pid_file, _ = _sshd_files(sb, host, port)
    return alive(read_pid(pid_file), "sshd") and port_open(host, port)


def ensure_sshd(sb: Sandbox, host: str | None = None, port: int | None = None) -> str:
    """Make sure our sshd listens on host:port (default sb.ssh_host:sb.ssh_port)."""
    host, port = host or sb.ssh_host, port or sb.ssh_port
    config, pid_file, log = _sshd_files(sb, host, port)
    host_pubkey = _ensure_keys(sb)
    _write_known_hosts(sb, host, port, host_pubkey)
    text = sshd_config(sb, host, port, pid_file)
    if sshd_running(sb, host, port) and config.is_file() and config.read_text() == text:
        return f"running on {host}:{port}"
    stop(pid_file, "sshd", timeout=10)  # ours, but stale or with an old config
    if port_open(host, port):
        raise DeployError(
            f"{host}:{port} is already taken by a process the sandbox did not start",
            "stop it, or pick another port with DEPLOY_SANDBOX_SSH_PORT",
        )
    config.write_text(text)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
    check(sshd_cmd(config, log), f"starting sshd on {host}:{port}", f"read {log}")
    if not wait(lambda: sshd_running(sb, host, port), 15):
        raise DeployError(
            f"sshd did not listen on {host}:{port} within 15s: {tail(log)}", f"read {log}"
        )
    return f"started on {host}:{port} (pid {read_pid(pid_file)})"


# --------------------------------------------------------------------------- up / down


@contextmanager
def _locked(sb: Sandbox) -> Iterator[None]:
    """Serialize `up` and `down` across processes (two dockerds must never race)."""
    sb.state_dir.mkdir(parents=True, exist_ok=True)
    with open(sb.state_dir / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(vms: int = 1, only: Sequence[int] = ()) -> Sandbox:
    """Bring up engine, registry, images, sshd and VMs vm1..vmN (or only the VMs `only`
    names: a test must not start again a VM another test stopped on purpose); print one line
    per piece."""
    sb = sandbox()
    wanted = list(only) or list(range(1, vms + 1))
    bad = [i for i in [vms, *only] if not 0 <= i <= vmlib.MAX_VMS] or \
        [i for i in only if i < 1]
    if bad:
        raise DeployError(f"--vms {bad[0]} is out of range", f"use 0 to {vmlib.MAX_VMS}")
    with _locked(sb):
        _up(sb, wanted)
    return sb


def _timed(name: str, step: Callable[[], str]) -> None:
    t0 = time.monotonic()
    state = step()
    print(f"{name}: {state} [{time.monotonic() - t0:.1f}s]", flush=True)


def _up(sb: Sandbox, vms: Sequence[int]) -> None:
    """The steps of `up`, each timed."""
    _timed("engine", lambda: ensure_engine(sb))
    _timed("registry", lambda: ensure_registry(sb))
    _timed("images", lambda: images.ensure_images(sb.cache_dir))
    _timed("python3.10 image", lambda: images.ensure_python310(sb.cache_dir))
    _timed("sshd", lambda: ensure_sshd(sb))
    for index in vms:
        _timed(sb.vm(index).name, functools.partial(up_vm, sb, index))
    vmlib.write_hosts(vmlib.running(sb.state_dir))


def up_vm(sb: Sandbox, index: int) -> str:
    """Bring VM `index` up (idempotent); its known_hosts lines (address and name) written."""
    v = sb.vm(index)
    _ensure_keys(sb)
    keygen = keygen_cmd(Path("KEY"), f"deploy-sandbox-{v.name}")[:-1]
    said = vmlib.up_vm(v, sb.registry, sb.state_dir / "authorized_keys", keygen)
    for name in (v.address, v.name):
        _write_known_hosts(sb, name, 22, vmlib.host_pubkey(v))
    return f"{v.address}: {said}"


def down_vms(sb: Sandbox, indices: Sequence[int] | None = None) -> None:
    """Stop sandbox VMs (all by default), each by its pid files and namespace."""
    targets = [sb.vm(i) for i in indices] if indices is not None else \
        vmlib.existing(sb.state_dir)
    with _locked(sb):
        for v in targets:
            print(f"{v.name}: {vmlib.stop_vm(v)}", flush=True)
        left = vmlib.running(sb.state_dir)
        vmlib.write_hosts(left)
        if not left:
            vmlib.remove_bridge()


def down() -> None:
    """Stop the VMs, then what the sandbox started (sshd, registry, dockerd), by pid file."""
    sb = sandbox()
    if not sb.state_dir.is_dir():
        print("nothing to stop")
        return
    down_vms(sb)
    with _locked(sb):
        for pid_file in sorted(sb.state_dir.glob("sshd*.pid")):
            print(f"{pid_file.stem}: {stop(pid_file, 'sshd')}")
        print(f"registry: {stop(sb.state_dir / 'registry.pid', 'docker-registry')}")
        print(f"engine: {stop(sb.state_dir / 'dockerd.pid', 'dockerd', timeout=60)}")


def status() -> bool:
    """Print each piece's state; True if everything is up."""
    sb = sandbox()
    engine = engine_running()
    pieces = {
        "engine": engine,
        "registry": registry_up(sb),
        "images": engine and all(images.image_exists(tag) for tag in images.IMAGES),
        "sshd": sshd_running(sb),
    }
    for v in vmlib.existing(sb.state_dir):
        pieces[f"{v.name} ({v.address})"] = v.holder is not None and vmlib.engine_up(v) and \
            vmlib.sshd_running(v)
    for name, ok in pieces.items():
        print(f"{name}: {'up' if ok else 'down'}")
    print(f"ssh: {' '.join(ssh_cmd(sb))}")
    for v in vmlib.running(sb.state_dir):
        print(f"ssh {v.name}: {' '.join(ssh_cmd(sb, host=v.name, port=22))}")
    return all(pieces.values())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox up|down|status`."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--vms", type=int, default=1, metavar="N",
                        help="up: make sure VMs vm1..vmN run (default 1; others are left alone)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.vms)
        elif args.command == "down":
            down()
        else:
            return 0 if status() else 1
    except DeployError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 1
    return 0

