"""Host key verification for every SSH connection, Fabric's own included.

Fabric accepts any host key silently (it sets paramiko's AutoAddPolicy and loads no
known_hosts). This policy checks the key against known_hosts files instead: an unknown host is
refused, a changed key is refused loudly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import fabric.connection
import paramiko

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Accept a server key only if a known_hosts file lists that key for that host."""

    def __init__(self, files: Iterable[str | Path]) -> None:
        self.files = [Path(f).expanduser() for f in files]

    def known(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        for path in self.files:
            if path.is_file():
                keys.load(str(path))
        return keys

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        entry = self.known().lookup(hostname)
        if entry is None:
            raise paramiko.SSHException(
                f"Server {hostname!r} not found in known_hosts "
                f"({', '.join(str(p) for p in self.files)})"
            )
        if entry.get(key.get_name()) != key:
            expected = entry.get(key.get_name()) or next(iter(entry.values()))
            raise paramiko.BadHostKeyException(hostname, key, expected)


def verify_fabric_connections(files: Iterable[str | Path]) -> None:
    """Make Fabric's own Connections (`fab -H host -- cmd`) verify host keys too."""
    policy_files = list(files)

    def policy() -> KnownHostsPolicy:
        return KnownHostsPolicy(policy_files)

    # Fabric has no setting for the policy: the class it instantiates is replaced on purpose.
    fabric.connection.AutoAddPolicy = policy  # type: ignore[misc,assignment]
