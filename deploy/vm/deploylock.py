"""The deploy lock's parts that need no VM: its holder record and the lease renewal thread."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import threading

from paramiko import Transport

from deploy.commands import vm as cmd
from deploy.core.runner import Runner
from deploy.core.settings import Settings


def parse_holder(raw: str) -> dict | None:
    """`lock-read` output -> the holder (with `lease_age` in seconds), None if free."""
    lines = raw.strip().splitlines()
    if not lines:
        return None
    try:
        holder = json.loads(lines[0])
    except json.JSONDecodeError:
        holder = {"holder": "unknown (holder.json unreadable)"}
    if not isinstance(holder, dict):
        holder = {"holder": "unknown (holder.json unreadable)"}
    for line in lines[1:]:
        if line.startswith("lease-age ") and line.split()[1].lstrip("-").isdigit():
            holder["lease_age"] = int(line.split()[1])
    return holder


def describe_holder(raw: str | dict) -> str:
    data = raw if isinstance(raw, dict) else parse_holder(raw)
    if not data:
        return "unknown holder"
    parts = [data.get("holder", "?"), f"since {data.get('time', '?')}"]
    if data.get("tag"):
        parts.append(f"{data.get('action', 'deploy')} of {data['tag']}")
    if data.get("message"):
        parts.append(f"({data['message']})")
    process = [f"pid {data['pid']}"] if data.get("pid") else []
    if "lease_age" in data:
        process.append(f"lease renewed {data['lease_age']}s ago")
    if process:
        parts.append(f"[{', '.join(process)}]")
    return " ".join(parts)


def lease_is_fresh(holder: dict, default_lease: float) -> bool:
    """Whether the holder may be alive: it renewed the lease recently, and it is not a process
    of this very machine that is gone (a deploy killed here is known dead at once)."""
    lease = holder.get("lease") or default_lease
    if "lease_age" not in holder or holder["lease_age"] >= float(lease):
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


class LeaseRenewer(threading.Thread):
    """Touches the lock's lease every lease/4 seconds over its own SSH channel (the shell may
    be busy for minutes with a migration), only while holder.json is still ours."""

    def __init__(self, transport: Transport, command: str, every: float) -> None:
        super().__init__(daemon=True, name="deploy-lease")
        self.transport = transport
        self.command = command
        self.every = every
        self.done = threading.Event()

    @classmethod
    def started(cls, runner: Runner, settings: Settings, holder_json: str
                ) -> LeaseRenewer | None:
        """A running renewer for the lock `holder_json` on the runner's VM (None in a dry run
        or without an SSH connection)."""
        connection = getattr(runner.target, "connection", None)
        if runner.dry_run or connection is None:
            return None
        transport = connection.client.get_transport()
        command = f"cd {shlex.quote(settings.app_dir)} && " + shlex.join(
            cmd.renew_lock(holder_json))
        renewer = cls(transport, command, max(1.0, settings.lock_lease / 4))
        renewer.start()
        return renewer

    def run(self) -> None:
        while not self.done.wait(self.every):
            with contextlib.suppress(Exception):
                channel = self.transport.open_session(timeout=10)
                channel.settimeout(10)
                channel.exec_command(self.command)
                channel.recv_exit_status()
                channel.close()

    def stop(self) -> None:
        self.done.set()
