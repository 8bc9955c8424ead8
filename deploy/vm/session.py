"""The SSH side of the remote half: which VMs, and one verified connection each, on which a
SIGTERM or SIGHUP cuts a task short the way Ctrl-C does."""

from __future__ import annotations

import contextlib
import getpass
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection
from paramiko.pkey import UnknownKeyType

from deploy.core.errors import DeployError
from deploy.core.hostkeys import DEFAULT_KNOWN_HOSTS, KnownHostsPolicy
from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.vm.shell import RemoteShell
from deploy.vm.signals import terminations_interrupt
from deploy.vm.steps import Vm


@dataclass(frozen=True)
class Target:
    host: str
    user: str
    port: int


def targets(settings: Settings, hosts: list[str] | None = None) -> list[Target]:
    """The hosts to act on: `-H` values (user@host:port) or the settings' host(s)."""
    names = hosts or [h.strip() for h in settings.host.split(",") if h.strip()]
    if not names:
        raise DeployError(
            "no VM host is set", "set host = \"vm.example.com\" in deploy.toml or pass -H HOST"
        )
    out = []
    for name in names:
        user = settings.user or getpass.getuser()
        port = settings.port
        if "@" in name:
            user, name = name.split("@", 1)
        if name.count(":") == 1:
            name, raw_port = name.split(":")
            port = int(raw_port)
        out.append(Target(name, user, port))
    return out


def check_key_file(key_file: Path) -> None:
    """Refuse, before any connection, a key_file that is missing or not a private key."""
    fix = "set key_file in deploy.toml (or DEPLOY_KEY_FILE) to your private key, not the .pub"
    if not key_file.exists():
        raise DeployError(f"SSH key {key_file} does not exist", fix)
    if not key_file.is_file():
        raise DeployError(f"SSH key {key_file} is not a file", fix)
    try:
        paramiko.PKey.from_path(key_file)
    except paramiko.PasswordRequiredException:
        raise DeployError(f"SSH key {key_file} is protected by a passphrase",
                          "use a deploy key without a passphrase, or unset key_file and load "
                          "the key into ssh-agent") from None
    except OSError as exc:
        raise DeployError(f"cannot read SSH key {key_file}: {exc.strerror}",
                          "fix its permissions") from None
    except (paramiko.SSHException, UnknownKeyType, ValueError):
        raise DeployError(f"{key_file} is not an SSH private key", fix) from None


def nodelay_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """paramiko's Transport over `sock`, Nagle's algorithm off first, as OpenSSH's client
    does: SSH's small packets (the key exchange, the login, each command and its answer)
    otherwise wait up to 40 ms for the other side's delayed ACK, several times a connection.
    paramiko makes the socket (its errors and timeouts as they were), at each (re)connection;
    a gateway's channel (ProxyJump, ProxyCommand) is left as it is."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return paramiko.Transport(sock, **kwargs)


def connect(settings: Settings, target: Target) -> Connection:
    """An open Fabric Connection whose host key was checked against known_hosts."""
    key_file = settings.key_file and Path(settings.key_file).expanduser()
    if key_file:
        check_key_file(key_file)
    known_hosts = Path(settings.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
    connect_kwargs: dict = {"allow_agent": not key_file, "look_for_keys": not key_file,
                            "transport_factory": nodelay_transport}
    if key_file:
        connect_kwargs["key_filename"] = str(key_file)
    conn = Connection(
        target.host,
        user=target.user,
        port=target.port,
        connect_timeout=settings.connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    client = conn.client
    assert client is not None  # a Connection makes its SSHClient when it is made
    client.set_missing_host_key_policy(KnownHostsPolicy([known_hosts]))
    where = f"{target.host}:{target.port}"
    trust = (
        f"if it is really your VM, add its key: ssh-keyscan -p {target.port} {target.host} "
        f">> {known_hosts}"
    )
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise DeployError(
            f"the host key of {where} CHANGED since it was trusted: refusing to connect",
            f"if the VM was rebuilt, remove its line from {known_hosts} and trust the new key",
        ) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise DeployError(f"the host key of {where} is unknown: refusing", trust) from None
        if isinstance(exc, paramiko.AuthenticationException):
            raise DeployError(
                f"SSH login as {target.user} on {where} was refused",
                "check user and key_file, and that the key is in the VM's authorized_keys",
            ) from None
        raise DeployError(f"SSH to {where} failed: {exc}", "check the VM and its sshd") from None
    except socket.gaierror:
        raise DeployError(f"unknown host {target.host!r}", "check host in deploy.toml") from None
    except (OSError, TimeoutError) as exc:
        raise DeployError(
            f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}",
            "check that the VM is up and its sshd listens there",
        ) from None
    return conn


@contextlib.contextmanager
def session(settings: Settings, target: Target, dry_run: bool = False) -> Iterator[Vm]:
    """A Vm on one connection for a whole task (none at all in a dry run)."""
    if dry_run:
        runner = Runner(None, where=target.host, dry_run=True, echo=settings.verbose)
        runner.say(f"$ cd {shlex.quote(settings.app_dir)}  (once, when the shell opens)")
        yield Vm(settings, runner)
        return
    with terminations_interrupt():
        conn = connect(settings, target)
        shell = RemoteShell(conn, where=target.host, network_timeout=settings.network_timeout,
                            home=settings.app_dir)
        try:
            yield Vm(settings, Runner(shell, where=target.host, secrets=settings.secrets,
                                      echo=settings.verbose))
        finally:
            shell.close()
            conn.close()
