"""A lock between the xdist workers of a test run, held shared by many or exclusive by one,
with a gate so that a writer waiting is not starved by readers that keep coming.

Re-entrant within a process: a fixture that takes it shared (building the run's images,
starting VMs) often runs inside a test that already holds it. A second `flock` there would
have to pass the gate again; with a writer waiting at the gate (holding it, waiting for the
readers to leave) the reader would wait for the writer and the writer for the reader, and
every other worker would queue at the gate behind them: the whole run stops.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

# lock file -> the modes this process holds it in, outermost first (kept here, not on the
# object: a module that imports conftest by name may get a second copy of it)
_HELD: dict[Path, list[bool]] = {}


class SharedLock:
    def __init__(self, lock: Path, gate: Path) -> None:
        self.lock = lock
        self.gate = gate
        self._held = _HELD.setdefault(lock, [])

    @contextlib.contextmanager
    def held(self, exclusive: bool = False) -> Iterator[None]:
        if self._held:
            if exclusive and not self._held[0]:
                # upgrading would wait for the other readers, which may wait for us
                raise RuntimeError(f"{self.lock} is held shared by this process: "
                                   "it cannot be taken exclusive inside that")
            self._held.append(exclusive)
            try:
                yield
            finally:
                self._held.pop()
            return
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        with open(self.gate, "a") as gate, open(self.lock, "a") as lock:
            fcntl.flock(gate, mode)
            try:
                fcntl.flock(lock, mode)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)
            self._held.append(exclusive)
            try:
                yield
            finally:
                self._held.pop()
                fcntl.flock(lock, fcntl.LOCK_UN)
