"""The suite's guard against a run that never ends: a test phase that waits forever fails
alone, with every thread's stack, and the run goes on."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import phase_limit


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
