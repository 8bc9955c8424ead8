"""An embedded deploy target on this machine: a Docker engine, a registry and an SSH "VM".

`python -m sandbox up` brings up, idempotently:

- engine:   `dockerd` (only if `docker info` fails), log in <state>/dockerd.log
- registry: `docker-registry` on 127.0.0.1:5000, storage in <state>/registry
- images:   base images built offline from a debootstrap rootfs (no Docker Hub needed)
- sshd:     a private sshd on 127.0.0.1:2222 that lets root in with <state>/id_ed25519

Everything lives in the state directory (DEPLOY_SANDBOX_DIR, default ~/.deploy-sandbox)
except the rootfs tarball, cached in DEPLOY_SANDBOX_CACHE (default /var/cache/deploy-sandbox)
so that it survives re-clones of the repo. `down` stops only what `up` started (by pid file).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import DeployError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Tag -> rootfs recipe. Bookworm's python3 is 3.11, so its rootfs stands in for python:3.11-slim.
BASE_IMAGES = {"python:3.11-slim": "bookworm-python"}
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["python3"]',
)
UNSET = Path()  # marks a Sandbox path field to derive from state_dir
DOCKER_PID_FILES = (
    (Path("/var/run/docker.pid"), "dockerd"),
    (Path("/var/run/docker/containerd/containerd.pid"), "containerd"),
)
SETUP_FIX = "run .ci/setup (it installs docker.io, docker-registry, openssh-server, debootstrap)"


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


# --------------------------------------------------------------------------- helpers


def _run(cmd: Sequence[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing its output as text; never raises on a non-zero exit."""
    try:
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except FileNotFoundError as exc:
        raise DeployError(f"{cmd[0]} is not installed", SETUP_FIX) from exc
    except subprocess.TimeoutExpired as exc:
        raise DeployError(
            f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s", "see its log and retry"
        ) from exc


def _check(cmd: Sequence[str], what: str, fix: str, timeout: float = 120) -> str:
    """Run a command and return its stdout; raise DeployError naming `what` if it fails."""
    result = _run(cmd, timeout=timeout)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        reason = " / ".join(detail) or f"exit {result.returncode}"
        raise DeployError(f"{what} failed: {reason}", fix)
    return result.stdout


def _exe(name: str) -> str:
    """Full path of a program, looking in sbin too (root's PATH may lack it)."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DeployError(f"{name} is not installed", SETUP_FIX)


def _start_detached(cmd: Sequence[str], log: Path, pid_file: Path) -> int:
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


def _read_pid(pid_file: Path) -> int | None:
    """The pid in a pid file, or None if there is no readable pid."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None, program: str) -> bool:
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


def _wait(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `check()` until it returns true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _stop(pid_file: Path, program: str, timeout: float = 30) -> str:
    """SIGTERM the process in `pid_file` if it is still `program`; say what happened."""
    pid = _read_pid(pid_file)
    if not _alive(pid, program):
        pid_file.unlink(missing_ok=True)
        return "none started by the sandbox is running"
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    if not _wait(lambda: not _alive(pid, program), timeout):
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _alive(pid, program), 5)
    pid_file.unlink(missing_ok=True)
    return f"stopped (pid {pid})"


def _tail(path: Path, lines: int = 5) -> str:
    """Last lines of a log file, for error messages."""
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- engine


def docker_info_cmd() -> list[str]:
    """Ask the engine whether it is up."""
    return ["docker", "info", "--format", "{{.ServerVersion}}"]


def dockerd_cmd() -> list[str]:
    """Start the Docker engine in the foreground (we detach it ourselves)."""
    return [_exe("dockerd")]


def engine_running() -> bool:
    """True if `docker info` reaches an engine."""
    try:
        return _run(docker_info_cmd(), timeout=30).returncode == 0
    except DeployError:
        return False


def _clear_stale_pid_files() -> None:
    """Drop dockerd/containerd pid files left by a killed engine whose pid may now be reused.

    dockerd refuses to start while /var/run/docker.pid names a live process, whatever it is.
    """
    for pid_file, program in DOCKER_PID_FILES:
        if pid_file.exists() and not _alive(_read_pid(pid_file), program):
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
    pid = _start_detached(dockerd_cmd(), log, sb.state_dir / "dockerd.pid")
    _wait(lambda: not _alive(pid, "dockerd") or engine_running(), 60, interval=0.5)
    if not _alive(pid, "dockerd"):
        raise DeployError(
            f"dockerd exited at start: {_tail(log)}",
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
    return [_exe("docker-registry"), "serve", str(config)]


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
    if _port_open(host, int(port)):
        raise DeployError(
            f"something on {sb.registry} is not a Docker registry (/v2/ did not answer 200)",
            f"stop whatever listens on {sb.registry}",
        )
    sb.state_dir.mkdir(parents=True, exist_ok=True)
    (sb.state_dir / "registry").mkdir(exist_ok=True)
    config = sb.state_dir / "registry.yml"
    config.write_text(registry_config(sb))
    log = sb.state_dir / "registry.log"
    pid = _start_detached(registry_cmd(config), log, sb.state_dir / "registry.pid")
    if not _wait(lambda: registry_up(sb), 30):
        raise DeployError(
            f"docker-registry did not answer on http://{sb.registry}/v2/ within 30s: {_tail(log)}",
            f"read {log}",
        )
    return f"started at http://{sb.registry} (pid {pid})"


# --------------------------------------------------------------------------- base images


def host_mirror() -> str:
    """The Debian mirror this machine's apt uses (so debootstrap goes where apt goes)."""
    if os.environ.get("DEPLOY_SANDBOX_MIRROR"):
        return os.environ["DEPLOY_SANDBOX_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for url in re.findall(r"https?://\S+", text):
            if re.search(r"/debian/?$", url):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def debootstrap_cmd(target: Path, mirror: str) -> list[str]:
    """Build a minimal bookworm rootfs with Python in `target`."""
    return [
        _exe("debootstrap"),
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        BASE_SUITE,
        str(target),
        mirror,
    ]


def tar_cmd(rootfs: Path, tarball: Path) -> list[str]:
    """Pack a rootfs into a tarball that `docker import` takes."""
    return ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."]


def import_cmd(tarball: Path, tag: str) -> list[str]:
    """Import a rootfs tarball as image `tag`."""
    cmd = ["docker", "import"]
    for change in IMAGE_CHANGES:
        cmd += ["--change", change]
    return [*cmd, str(tarball), tag]


def image_exists(tag: str) -> bool:
    """True if the engine has image `tag`."""
    return _run(["docker", "image", "inspect", "--format", "{{.Id}}", tag]).returncode == 0


def trim_rootfs(root: Path) -> None:
    """Make the debootstrap rootfs behave like python:*-slim and keep it small."""
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.is_file():  # the host's bundle may carry a CA that pip needs to reach PyPI
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_ca, root / "etc/ssl/certs/ca-certificates.crt")
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for link, target in (("python", "python3"), ("pip", "pip3")):
        path = root / "usr/bin" / link
        if not path.exists() and not path.is_symlink():
            path.symlink_to(target)
    for pattern in (
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/lib/apt/lists/*",
        "usr/share/doc/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "var/log/*.log",
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def ensure_rootfs_tarball(sb: Sandbox, name: str) -> Path:
    """Build (once) and cache the rootfs tarball `name`; return its path."""
    tarball = sb.cache_dir / f"{name}.tar"
    if tarball.is_file():
        return tarball
    sb.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=sb.cache_dir, prefix=f"{name}.") as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            _build_rootfs(sb, name, rootfs)
        finally:
            _unmount_under(rootfs)  # never let the cleanup walk into a /proc left mounted
        partial = Path(tmp) / "rootfs.tar"
        _check(
            tar_cmd(rootfs, partial),
            "packing the rootfs",
            f"check free space in {tmp}",
            timeout=600,
        )
        partial.replace(tarball)  # atomic: a half-written tarball is never cached
    return tarball


def _build_rootfs(sb: Sandbox, name: str, rootfs: Path) -> None:
    """debootstrap the rootfs into `rootfs` and trim it."""
    mirror = host_mirror()
    log = sb.cache_dir / f"{name}.debootstrap.log"
    with open(log, "w") as out:
        code = subprocess.run(
            debootstrap_cmd(rootfs, mirror), stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    if code != 0:
        raise DeployError(
            f"debootstrap of {BASE_SUITE} from {mirror} failed (exit {code}): {_tail(log)}",
            f"read {log}; set DEPLOY_SANDBOX_MIRROR to a reachable Debian mirror",
        )
    trim_rootfs(rootfs)


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything debootstrap may have left mounted below `root`."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root) + "/"
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        _run(["umount", "-l", point])


def ensure_base_images(sb: Sandbox, tags: Iterable[str] = ("python:3.11-slim",)) -> str:
    """Make sure each base image tag exists, importing it from a cached debootstrap rootfs."""
    done = []
    for tag in tags:
        if image_exists(tag):
            continue
        if tag not in BASE_IMAGES:
            raise DeployError(
                f"the sandbox cannot build base image {tag}",
                f"use one of: {', '.join(BASE_IMAGES)}",
            )
        tarball = ensure_rootfs_tarball(sb, BASE_IMAGES[tag])
        _check(
            import_cmd(tarball, tag),
            f"docker import of {tag}",
            f"delete {tarball} to rebuild it, then retry",
            timeout=600,
        )
        done.append(tag)
    return f"imported {', '.join(done)}" if done else "present"


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
    )


def sshd_cmd(config: Path, log: Path) -> list[str]:
    """Start sshd (it daemonizes itself) with our config, logging to `log`."""
    return [_exe("sshd"), "-f", str(config), "-E", str(log)]


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
            _check(keygen_cmd(key, comment), f"ssh-keygen for {key}", SETUP_FIX)
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
        sb.known_hosts.write_text(new)


def sshd_running(sb: Sandbox, host: str | None = None, port: int | None = None) -> bool:
    """True if our sshd for host:port is alive and accepting connections."""
    host, port = host or sb.ssh_host, port or sb.ssh_port
    _, pid_file, _ = _sshd_files(sb, host, port)
    return _alive(_read_pid(pid_file), "sshd") and _port_open(host, port)


def ensure_sshd(sb: Sandbox, host: str | None = None, port: int | None = None) -> str:
    """Make sure our sshd listens on host:port (default sb.ssh_host:sb.ssh_port)."""
    host, port = host or sb.ssh_host, port or sb.ssh_port
    config, pid_file, log = _sshd_files(sb, host, port)
    host_pubkey = _ensure_keys(sb)
    _write_known_hosts(sb, host, port, host_pubkey)
    text = sshd_config(sb, host, port, pid_file)
    if sshd_running(sb, host, port) and config.is_file() and config.read_text() == text:
        return f"running on {host}:{port}"
    _stop(pid_file, "sshd", timeout=10)  # ours, but stale or with an old config
    if _port_open(host, port):
        raise DeployError(
            f"{host}:{port} is already taken by a process the sandbox did not start",
            "stop it, or pick another port with DEPLOY_SANDBOX_SSH_PORT",
        )
    config.write_text(text)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
    _check(sshd_cmd(config, log), f"starting sshd on {host}:{port}", f"read {log}")
    if not _wait(lambda: sshd_running(sb, host, port), 15):
        raise DeployError(
            f"sshd did not listen on {host}:{port} within 15s: {_tail(log)}", f"read {log}"
        )
    return f"started on {host}:{port} (pid {_read_pid(pid_file)})"


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


def up() -> Sandbox:
    """Bring up engine, registry, base images and sshd; print one line per piece."""
    sb = sandbox()
    with _locked(sb):
        _up(sb)
    return sb


def _up(sb: Sandbox) -> None:
    """The steps of `up`, each timed."""
    for name, step in (
        ("engine", ensure_engine),
        ("registry", ensure_registry),
        ("images", ensure_base_images),
        ("sshd", ensure_sshd),
    ):
        t0 = time.monotonic()
        state = step(sb)
        print(f"{name}: {state} [{time.monotonic() - t0:.1f}s]", flush=True)


def down() -> None:
    """Stop what the sandbox started (sshd, registry, dockerd), by pid file only."""
    sb = sandbox()
    if not sb.state_dir.is_dir():
        print("nothing to stop")
        return
    with _locked(sb):
        for pid_file in sorted(sb.state_dir.glob("sshd*.pid")):
            print(f"{pid_file.stem}: {_stop(pid_file, 'sshd')}")
        print(f"registry: {_stop(sb.state_dir / 'registry.pid', 'docker-registry')}")
        print(f"engine: {_stop(sb.state_dir / 'dockerd.pid', 'dockerd', timeout=60)}")


def status() -> bool:
    """Print each piece's state; True if everything is up."""
    sb = sandbox()
    engine = engine_running()
    pieces = {
        "engine": engine,
        "registry": registry_up(sb),
        "images": engine and all(image_exists(tag) for tag in BASE_IMAGES),
        "sshd": sshd_running(sb),
    }
    for name, ok in pieces.items():
        print(f"{name}: {'up' if ok else 'down'}")
    print(f"ssh: {' '.join(ssh_cmd(sb))}")
    return all(pieces.values())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox up|down|status`."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
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

