"""Ports for apps deployed to the sandbox VMs by tests and benchmarks."""

from __future__ import annotations

import fcntl
import random
import socket
import time
from pathlib import Path

# Ports handed out by free_port, across every test process on this machine: an app's port is
# taken on a sandbox VM that other xdist workers deploy to at the same time, where the laptop's
# "free" says nothing. Each is kept for a day.
PORTS_FILE = Path("/tmp/deploy-tests-ports")
PORT_RANGE = (20000, 32000)  # below the kernel's ephemeral ports, which connections take
PORT_KEPT = 24 * 3600


def free_port() -> int:
    """A port free on the laptop that no other test on this machine was given today."""
    with open(PORTS_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        now = time.time()
        taken: dict[int, str] = {}
        for entry in handle.read().split():
            number, _, since = entry.partition("@")
            if number.isdigit() and since.replace(".", "", 1).isdigit() \
                    and now - float(since) < PORT_KEPT:
                taken[int(number)] = since
        while True:
            port = random.randrange(*PORT_RANGE)
            if port in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            handle.seek(0)
            handle.truncate()
            handle.write("".join(f"{p}@{t} " for p, t in taken.items()) + f"{port}@{now} ")
            return port
