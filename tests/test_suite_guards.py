"""The suite's guards against a run that never ends: the registry lock between xdist workers
cannot deadlock a worker with itself, and a test phase that waits forever fails alone."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import phase_limit
from sharedlock import SharedLock

TESTS = Path(__file__).resolve().parent


def gate_closed(gate: Path) -> bool:
    with open(gate, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_a_reader_takes_the_lock_again_while_a_writer_waits_at_the_gate(tmp_path: Path):
    lock, gate = tmp_path / "lock", tmp_path / "gate"
    reader = SharedLock(lock, gate)
    writer_code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from pathlib import Path; "
                   "from sharedlock import SharedLock; "
                   f"l = SharedLock(Path({str(lock)!r}), Path({str(gate)!r}))\n"
                   "with l.held(exclusive=True): print('writer has it', flush=True)")
    with reader.held():
        writer = subprocess.Popen([sys.executable, "-c", writer_code], stdout=subprocess.PIPE,
                                  text=True)
        try:
            deadline = time.monotonic() + 10
            while not gate_closed(gate):  # the writer waits for us, the gate closed behind it
                assert time.monotonic() < deadline and writer.poll() is None
                time.sleep(0.02)
            again = reader.held()  # as a fixture inside a test that holds it
            nested = threading.Thread(target=again.__enter__, daemon=True)
            nested.start()
            nested.join(5)
            assert not nested.is_alive(), "the reader waits at the gate the writer holds"
            again.__exit__(None, None, None)
            assert writer.poll() is None  # still waiting for us
        except BaseException:
            writer.kill()
            raise
    out, _ = writer.communicate(timeout=10)
    assert (writer.returncode, out) == (0, "writer has it\n")


def test_the_lock_is_not_made_exclusive_inside_a_shared_hold(tmp_path: Path):
    lock = SharedLock(tmp_path / "lock", tmp_path / "gate")
    with lock.held(), pytest.raises(RuntimeError, match="held shared by this process"):
        with lock.held(exclusive=True):
            pass
    with lock.held(exclusive=True), lock.held():  # an exclusive hold covers a shared one
        assert not gate_closed(tmp_path / "gate")


def waits_forever() -> None:
    threading.Event().wait()


def test_a_phase_that_waits_forever_fails_with_its_stack():
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed, phase_limit(0.3):
        waits_forever()
    assert time.monotonic() - start < 5
    message = str(failed.value)
    assert message.startswith("still running after 0.3 s: stopped. Every thread's stack:")
    assert "in waits_forever" in message and "-- thread MainThread" in message
