"""Sandbox VMs: separate machines as far as the deploy tool can tell, on this very kernel.

VM i (named vmI, address 10.213.0.(10+i)) is:

- its own network namespace `dsb-vmI`, a veth to the laptop's bridge `dsb0` (10.213.0.1/24);
- its own mount and UTS namespaces (hostname vmI; held by a `sleep` process, shared by the
  VM's daemons) where
  <state>/vms/vmI/srv is /srv, a fresh tmpfs is /run, <state>/vms/vmI/dot-docker is /root/.docker
  (with the compose and buildx plugins);
- its own Docker engine (data root <state>/vms/vmI/docker; the laptop reaches it at
  unix://<state>/vms/vmI/docker.sock, a login on the VM at the default /var/run/docker.sock);
- its own sshd on 10.213.0.(10+i):22 with its own host key (known_hosts lines for the address
  and the name vmI; /etc/hosts names it);
- a forwarder on its 127.0.0.1:5000 to the laptop's registry, so `127.0.0.1:5000/name:tag` is the
  same image everywhere; the sandbox's base images are `docker save | docker load`ed into the
  first VM, whose image store seeds the others' (hard links: see `seed_engine`).

What it is not: no kernel, CPU or memory of its own; processes are visible in the laptop's `ps`;
/tmp, /etc and the rest of the filesystem are the laptop's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.commands import docker
from deploy.core.errors import DeployError
from sandbox import images
from sandbox.proc import (
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

BRIDGE = "dsb0"
SUBNET = "10.213.0"  # a /24 that Docker's default address pools (172.17-31/16, 192.168/16) miss
GATEWAY = f"{SUBNET}.1"
MAX_VMS = 20
HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARK = "# deploy-sandbox"
READY = "deploy-sandbox-vm"  # marker file the holder creates in the VM's /run
HOST_PLUGINS = Path.home() / ".docker" / "cli-plugins"


@dataclass(frozen=True)
class Vm:
    """One sandbox VM: where its state lives on the laptop and how to reach it."""

    index: int
    state_dir: Path  # the sandbox's state dir; the VM's own is state_dir/vms/NAME

    @property
    def name(self) -> str:
        return f"vm{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def netns(self) -> str:
        return f"dsb-{self.name}"

    @property
    def dir(self) -> Path:
        return self.state_dir / "vms" / self.name

    @property
    def srv(self) -> Path:
        """The laptop-side path of the VM's /srv."""
        return self.dir / "srv"

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST for the laptop to reach this VM's engine."""
        return f"unix://{self.dir / 'docker.sock'}"

    def docker(self, *args: str) -> list[str]:
        """`docker` against this VM's engine, run on the laptop."""
        return ["docker", "--host", self.docker_host, *args]

    def host_path(self, vm_path: str) -> Path:
        """The laptop-side path of a path on the VM (only /srv/... is the VM's own)."""
        path = Path(vm_path)
        if path == Path("/srv") or Path("/srv") in path.parents:
            return self.srv / path.relative_to("/srv")
        raise ValueError(f"{vm_path} is not under the VM's /srv")

    def pid_file(self, what: str) -> Path:
        return self.dir / f"{what}.pid"

    def log(self, what: str) -> Path:
        return self.dir / f"{what}.log"

    @property
    def holder(self) -> int | None:
        """pid of the process holding the VM's mount namespace, if it is alive."""
        pid = read_pid(self.pid_file("holder"))
        return pid if pid and alive(pid, "sleep") and self._holds_netns(pid) else None

    def _holds_netns(self, pid: int) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(self.netns_file).st_ino
        except OSError:
            return False

    @property
    def netns_file(self) -> Path:
        return Path("/run/netns") / self.netns

    def in_vm(self, *argv: str, cwd: str = "") -> list[str]:
        """argv run inside the VM's namespaces (needs the holder), in `cwd` on the VM."""
        pid = self.holder
        if pid is None:
            raise DeployError(f"sandbox {self.name} is not running", "run: python -m sandbox up")
        if cwd:  # nsenter's --wd would look the directory up before entering the VM
            argv = ("sh", "-c", 'cd "$1" || exit; shift; exec "$@"', "sh", cwd, *argv)
        return ["nsenter", "-t", str(pid), "--mount", "--uts", "--net", "--", *argv]


def vm(sb_state: Path, index: int) -> Vm:
    """VM number `index` (1-based) of the sandbox in `sb_state`."""
    if not 1 <= index <= MAX_VMS:
        raise DeployError(f"there is no sandbox VM {index}", f"use 1 to {MAX_VMS}")
    return Vm(index, sb_state)


def existing(sb_state: Path) -> list[Vm]:
    """The VMs that have a state directory (running or not), in order."""
    root = sb_state / "vms"
    found = []
    for path in root.glob("vm*") if root.is_dir() else ():
        if path.name[2:].isdigit() and 1 <= int(path.name[2:]) <= MAX_VMS:
            found.append(Vm(int(path.name[2:]), sb_state))
    return sorted(found, key=lambda v: v.index)


# --------------------------------------------------------------------------- network


def _ip(*args: str) -> subprocess.CompletedProcess:
    return run([exe("ip"), *args])


def ensure_bridge() -> None:
    """The laptop side of the VMs' network: bridge dsb0 with 10.213.0.1/24."""
    if _ip("link", "show", BRIDGE).returncode != 0:
        taken = _ip("-4", "-o", "addr", "show").stdout
        if f" {SUBNET}." in taken:
            raise DeployError(f"{SUBNET}.0/24 is already used on this machine",
                              f"free {SUBNET}.0/24 (see `ip addr`) for the sandbox VMs")
        check([exe("ip"), "link", "add", BRIDGE, "type", "bridge"], "creating bridge dsb0",
              "run as root")
    if f"{GATEWAY}/24" not in _ip("-4", "-o", "addr", "show", "dev", BRIDGE).stdout:
        check([exe("ip"), "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], "addressing dsb0",
              "see `ip addr show dsb0`")
    check([exe("ip"), "link", "set", BRIDGE, "up"], "bringing dsb0 up", "see `ip link`")


# The laptop's dockerd sets FORWARD's policy to DROP, which drops traffic between two VMs on
# the bridge too (a swarm's control port, gossip and VXLAN; an app host reaching the database
# host). DOCKER-USER is the chain Docker leaves to the user; FORWARD where there is none.
VM_TO_VM = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]


def allow_vm_to_vm() -> None:
    """Let VMs reach each other across dsb0 (that bridge only), once."""
    iptables = exe("iptables")
    chain = "DOCKER-USER" if run([iptables, "-n", "-L", "DOCKER-USER"]).returncode == 0 \
        else "FORWARD"
    if run([iptables, "-C", chain, *VM_TO_VM]).returncode != 0:
        check([iptables, "-I", chain, *VM_TO_VM], f"letting VMs reach each other ({chain})",
              "run as root, with iptables installed")


def remove_bridge() -> None:
    """Delete the bridge once no VM uses it."""
    if _ip("link", "show", BRIDGE).returncode == 0:
        _ip("link", "del", BRIDGE)


def _network_ok(v: Vm) -> bool:
    shown = _ip("-n", v.netns, "-4", "-o", "addr", "show", "dev", "eth0")
    return shown.returncode == 0 and f" {v.address}/24 " in shown.stdout


def ensure_network(v: Vm) -> None:
    """The VM's network namespace, eth0 with its address, its route to the laptop."""
    if v.netns_file.exists() and _network_ok(v):
        return
    remove_network(v)
    ip = exe("ip")
    for what, argv in (
        ("creating the namespace", [ip, "netns", "add", v.netns]),
        ("creating its veth", [ip, "link", "add", v.netns, "type", "veth", "peer", "name",
                               "eth0", "netns", v.netns]),
        ("attaching it to dsb0", [ip, "link", "set", v.netns, "master", BRIDGE, "up"]),
        # a fixed MAC: a laptop that cached the VM's address before a restart still reaches it
        ("setting eth0's MAC", [ip, "-n", v.netns, "link", "set", "eth0", "address",
                                f"02:00:0a:d5:00:{10 + v.index:02x}"]),
        ("addressing eth0", [ip, "-n", v.netns, "addr", "add", f"{v.address}/24", "dev",
                             "eth0"]),
        ("bringing eth0 up", [ip, "-n", v.netns, "link", "set", "eth0", "up"]),
        ("bringing lo up", [ip, "-n", v.netns, "link", "set", "lo", "up"]),
        ("routing", [ip, "-n", v.netns, "route", "add", "default", "via", GATEWAY]),
    ):
        check(argv, f"{v.name}: {what}", "see `ip netns` and `ip link`")
    _ip("neigh", "flush", "to", v.address, "dev", BRIDGE)


def remove_network(v: Vm) -> None:
    """Delete the VM's namespace (and with it its veth pair); fine if it is gone."""
    if v.netns_file.exists():
        _ip("netns", "del", v.netns)
    if _ip("link", "show", v.netns).returncode == 0:
        _ip("link", "del", v.netns)


# --------------------------------------------------------------------------- daemons


def _holder_script(v: Vm) -> str:
    dot_docker = v.dir / "dot-docker"
    return "; ".join([
        "set -e",
        f"hostname {v.name}",
        f"mount --bind {v.srv} /srv",
        "mount -t tmpfs -o mode=0755 tmpfs /run",
        "mkdir -p /run/sshd",
        f"mount --bind {dot_docker} /root/.docker",
        # root's rc file is a fresh VM's, not the laptop's: bash sources ~/.bashrc for every
        # SSH command, and a laptop's (pyenv init, say) costs each session ~0.1 s
        f"if [ -f /root/.bashrc ]; then mount --bind {v.dir / 'root-bashrc'} /root/.bashrc; fi",
        f"touch /run/{READY}",
        "exec sleep infinity",
    ])


def start_holder(v: Vm) -> int:
    """Start the process that holds the VM's mount namespace (inside its network namespace)."""
    for path in (v.srv, v.dir / "dot-docker" / "cli-plugins", Path("/srv"), Path("/root/.docker")):
        path.mkdir(parents=True, exist_ok=True)
    (v.dir / "root-bashrc").write_text("# root's ~/.bashrc on this sandbox VM: nothing to run\n")
    plugins = v.dir / "dot-docker" / "cli-plugins"
    for plugin in sorted(HOST_PLUGINS.glob("docker-*")):
        target = plugins / plugin.name
        if not target.exists() or target.stat().st_size != plugin.stat().st_size:
            shutil.copy2(plugin, target)
    argv = ["nsenter", f"--net={v.netns_file}", "unshare", "--mount", "--uts", "--propagation",
            "private", "--", "sh", "-c", _holder_script(v)]
    pid = start_detached(argv, v.log("holder"), v.pid_file("holder"))
    ready = Path(f"/proc/{pid}/root/run/{READY}")
    if not wait(lambda: ready.exists() or not alive(pid, "sleep") and not _starting(pid), 10):
        raise DeployError(f"{v.name}: its namespace holder did not start: {tail(v.log('holder'))}",
                          f"read {v.log('holder')}")
    if not ready.exists():
        raise DeployError(f"{v.name}: its namespace holder exited: {tail(v.log('holder'))}",
                          f"read {v.log('holder')}")
    return pid


def _starting(pid: int) -> bool:
    """True while pid is still nsenter/unshare/sh on its way to `sleep`."""
    return any(alive(pid, name) for name in ("nsenter", "unshare", "sh"))


def dockerd_argv(v: Vm) -> list[str]:
    """The VM's engine: own data root, exec root and pid file in its /run, two sockets."""
    return [
        exe("dockerd"),
        "--config-file", str(v.dir / "daemon.json"),  # not the laptop's /etc/docker/daemon.json
        "--data-root", str(v.dir / "docker"),
        "--exec-root", "/run/docker",
        "--pidfile", "/run/docker.pid",
        "--host", "unix:///var/run/docker.sock",
        "--host", v.docker_host,
        "--cgroup-parent", f"/deploy-sandbox-{v.name}",
        # /24 networks (512) instead of the default /16s and /20s (about 30): every app and
        # proxy a test run makes gets a network, and a run cut short leaves some behind
        "--default-address-pool", "base=172.18.0.0/15,size=24",
        "--log-level", "warn",
    ]


def engine_up(v: Vm) -> bool:
    """True if the VM's engine answers `docker info`."""
    return run(v.docker(*docker.engine_info()[1:]), timeout=20).returncode == 0


def ensure_dockerd(v: Vm) -> str:
    """Start the VM's dockerd if it is not running (clearing pid files a crash left behind)."""
    pid = read_pid(v.pid_file("dockerd"))
    if alive(pid, "dockerd") and engine_up(v):
        return "running"
    if alive(pid, "dockerd"):  # alive but not answering: give it a moment, else restart
        if wait(lambda: engine_up(v), 20, interval=0.5):
            return "running"
        stop(v.pid_file("dockerd"), "dockerd", timeout=20)
    holder = v.holder
    assert holder is not None
    (v.dir / "daemon.json").write_text("{}\n")
    for stale in ("run/docker.pid", "run/docker/containerd/containerd.pid"):
        Path(f"/proc/{holder}/root/{stale}").unlink(missing_ok=True)
    pid = start_detached(v.in_vm(*dockerd_argv(v)), v.log("dockerd"), v.pid_file("dockerd"))
    if not wait(lambda: engine_up(v) or not alive(pid, "dockerd"), 60, interval=0.5) or \
            not alive(pid, "dockerd"):
        raise DeployError(f"{v.name}: dockerd did not come up: {tail(v.log('dockerd'))}",
                          f"read {v.log('dockerd')}")
    return f"started dockerd (pid {pid})"


def laptop_image_ids(tags: Sequence[str] = images.IMAGES) -> dict[str, str]:
    """The laptop engine's image id of each tag ("" for a tag it lacks)."""
    return {tag: run(["docker", "image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip()
            for tag in tags}


def ensure_images(v: Vm, laptop_ids: dict[str, str]) -> str:
    """Load the sandbox's images into the VM's engine (only those missing or different from
    `laptop_ids`, the laptop's: `laptop_image_ids`)."""
    missing = []
    for tag, ours in laptop_ids.items():
        theirs = run(v.docker("image", "inspect", "--format", "{{.Id}}", tag)).stdout.strip()
        if ours and ours != theirs:
            missing.append(tag)
    if not missing:
        return "images present"
    save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE)
    load = subprocess.run(v.docker("load", "--quiet"), stdin=save.stdout, capture_output=True,
                          text=True, timeout=600, check=False)
    assert save.stdout is not None
    save.stdout.close()
    if save.wait(timeout=60) != 0 or load.returncode != 0:
        raise DeployError(f"{v.name}: loading {', '.join(missing)} failed: {load.stderr.strip()}",
                          "check free disk space and that the laptop engine has these images")
    return f"loaded {', '.join(missing)}"


# A `docker load` of the base images writes about 550 MB into each VM (5 s, plus 4 s for the
# `docker save`), and a machine's disk does not load two VMs faster than one after the other.
# So the first VM loaded fresh leaves a seed: its engine's image store, the layers hard-linked.
# A new VM's engine starts from a copy of it (hard links again: no data written). Image layers
# are only ever read (overlayfs writes to a container's own upper directory) and removing an
# image in one VM unlinks only that VM's names, so the VMs stay apart.

def seed_dir(v: Vm) -> Path:
    return v.state_dir / "vms" / "image-seed"


def _seed_ids(seed: Path) -> dict[str, str]:
    try:
        return dict(json.loads((seed / "ids.json").read_text()))
    except (OSError, ValueError):
        return {}


def _copy_store(source: Path, target: Path, what: str, fix: str) -> Path:
    """A new `target` holding `source`'s image store: the layers (overlay2) hard-linked, the
    metadata (image) copied."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    check(["cp", "-a", "--link", str(source / "overlay2"), str(target / "overlay2")], what, fix)
    check(["cp", "-a", str(source / "image"), str(target / "image")], what, fix)
    return target


def seed_engine(v: Vm, laptop_ids: dict[str, str]) -> bool:
    """Give a VM whose engine has no data root yet the seed's image store, if the seed holds
    the laptop's current images (`laptop_ids`); True if it did."""
    seed, root = seed_dir(v), v.dir / "docker"
    if root.exists() or not seed.is_dir():
        return False
    if _seed_ids(seed) != laptop_ids or not all(laptop_ids.values()):
        shutil.rmtree(seed, ignore_errors=True)  # older images: the next fresh load makes it anew
        return False
    _copy_store(seed, v.dir / "docker.seeding", f"{v.name}: copying the seed",
                f"remove {seed} and retry").rename(root)
    return True


def make_seed(v: Vm, laptop_ids: dict[str, str]) -> None:
    """Keep the image store of `v`, whose engine holds the base images (`laptop_ids`) and
    nothing else yet, as the seed (layers hard-linked)."""
    seed, root = seed_dir(v), v.dir / "docker"
    partial = _copy_store(root, seed.with_name(seed.name + ".partial"),
                          f"{v.name}: making the seed", f"check {seed.parent}")
    (partial / "ids.json").write_text(json.dumps(laptop_ids))
    shutil.rmtree(seed, ignore_errors=True)
    partial.rename(seed)


def ensure_forwarder(v: Vm, registry: str) -> str:
    """The VM's 127.0.0.1:5000 forwarded to the laptop's registry."""
    pid_file = v.pid_file("forward")
    if alive(read_pid(pid_file), "dsb-forward"):
        return "forwarder running"
    port = registry.rpartition(":")[2]
    log = v.log("forward")
    log.unlink(missing_ok=True)
    script = str(Path(__file__).resolve().parent / "forward.py")
    argv = [sys.executable, script, "--listen-netns", str(v.netns_file), port, registry]
    pid = start_detached(argv, log, pid_file)
    if not wait(lambda: "listening" in (log.read_text() if log.exists() else ""), 10):
        stop(pid_file, "dsb-forward", timeout=5)
        raise DeployError(f"{v.name}: the registry forwarder did not start: {tail(log)}",
                          f"read {log}")
    return f"forwarder started (pid {pid})"


def sshd_config(v: Vm, authorized_keys: Path) -> str:
    """The VM's sshd: port 22 of its address, root by key only, its own host key."""
    return "\n".join([
        "Port 22",
        f"ListenAddress {v.address}",
        f"HostKey {v.dir / 'ssh_host_ed25519_key'}",
        f"PidFile {v.pid_file('sshd')}",
        f"AuthorizedKeysFile {authorized_keys}",
        *sshd_common_options(),
    ])


def sshd_running(v: Vm) -> bool:
    return alive(read_pid(v.pid_file("sshd")), "sshd") and port_open(v.address, 22)


def ensure_sshd(v: Vm, authorized_keys: Path, keygen: list[str]) -> str:
    """The VM's sshd, started inside its namespaces; its host key made once."""
    key = v.dir / "ssh_host_ed25519_key"
    if not key.is_file():
        key.with_name(key.name + ".pub").unlink(missing_ok=True)
        check([*keygen, str(key)], f"{v.name}: ssh-keygen", "is openssh-client installed?")
    config = v.dir / "sshd_config"
    text = sshd_config(v, authorized_keys)
    if sshd_running(v) and config.is_file() and config.read_text() == text:
        return "sshd running"
    stop(v.pid_file("sshd"), "sshd", timeout=10)
    config.write_text(text)
    check(v.in_vm(exe("sshd"), "-f", str(config), "-E", str(v.log("sshd"))),
          f"{v.name}: starting sshd", f"read {v.log('sshd')}")
    if not wait(lambda: sshd_running(v), 15):
        raise DeployError(f"{v.name}: sshd did not listen on {v.address}:22: {tail(v.log('sshd'))}",
                          f"read {v.log('sshd')}")
    return f"sshd on {v.address}:22"


def host_pubkey(v: Vm) -> str:
    return (v.dir / "ssh_host_ed25519_key.pub").read_text().strip()


# --------------------------------------------------------------------------- names


def write_hosts(vms: Sequence[Vm]) -> None:
    """/etc/hosts names each running VM (`vm1`, ...), in lines marked as the sandbox's."""
    try:
        old = HOSTS_FILE.read_text().splitlines()
    except OSError:
        old = []
    kept = [line for line in old if not line.endswith(HOSTS_MARK)]
    lines = [*kept, *(f"{v.address} {v.name} {HOSTS_MARK}" for v in vms)]
    if lines != old:
        tmp = HOSTS_FILE.with_name(".hosts.deploy-sandbox")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o644)
        try:
            tmp.replace(HOSTS_FILE)
        except OSError:  # /etc/hosts may be a mount point: write it in place
            HOSTS_FILE.write_text("\n".join(lines) + "\n")
            tmp.unlink(missing_ok=True)


def running(sb_state: Path) -> list[Vm]:
    """The VMs whose namespace holder is alive."""
    return [v for v in existing(sb_state) if v.holder is not None]


# --------------------------------------------------------------------------- up / down


def up_vm(v: Vm, registry: str, authorized_keys: Path, keygen: list[str]) -> str:
    """Bring VM `v` up, idempotently; after a crash, clear what is left and start again."""
    v.dir.mkdir(parents=True, exist_ok=True)
    done = []
    if v.holder is None:
        stop_vm(v)  # whatever a crash left: daemons by pid file, the namespace
        ensure_bridge()
        ensure_network(v)
        start_holder(v)
        done.append("started")
    allow_vm_to_vm()  # also for VMs an older sandbox started
    laptop_ids = laptop_image_ids()
    fresh = not (v.dir / "docker").exists()
    seeded = fresh and seed_engine(v, laptop_ids)
    done.append(ensure_dockerd(v))
    loaded = ensure_images(v, laptop_ids)
    if fresh and not seeded and loaded.startswith("loaded"):
        make_seed(v, laptop_ids)
    done.append("images from the seed" if seeded and loaded == "images present" else loaded)
    done.append(ensure_forwarder(v, registry))
    done.append(ensure_sshd(v, authorized_keys, keygen))
    return ", ".join(done)


def stop_vm(v: Vm) -> str:
    """Stop the VM's daemons (by pid file, if still theirs), its holder and its namespace."""
    said = []
    for what, program, timeout in (("sshd", "sshd", 10), ("forward", "dsb-forward", 5),
                                   ("dockerd", "dockerd", 60), ("holder", "sleep", 5)):
        result = stop(v.pid_file(what), program, timeout=timeout)
        if result.startswith("stopped"):
            said.append(what)
    _kill_leftovers(v)
    remove_network(v)
    return f"stopped {', '.join(said)}" if said else "not running"


def _kill_leftovers(v: Vm) -> None:
    """Kill processes still inside the VM's network namespace (a dockerd's containerd and shims
    after a crash), found by the namespace file's inode: only ours."""
    try:
        inode = os.stat(v.netns_file).st_ino
    except OSError:
        return
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.stat(proc / "ns" / "net").st_ino == inode:
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue
    time.sleep(0.2)
