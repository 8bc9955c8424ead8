"""When and by whom: the stamp on every record the toolkit writes (a release's history
entry, the deploy lock's holder, maintenance mode, a hook's failure)."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime


def stamp() -> dict:
    """When and by whom, for a history record."""
    return {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "who": f"{getpass.getuser()}@{socket.gethostname()}"}
