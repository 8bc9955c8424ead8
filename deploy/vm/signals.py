"""Signals that cut a flow short: SIGTERM and SIGHUP handled exactly like Ctrl-C, the exit code
they give, and blocks that must run to their end whatever signal comes.

It imports nothing of the remote half, so every module of it (the lock, the session, the
phases) can use it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal), handled exactly like Ctrl-C; exit 128+signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal that cut a command short (130 for Ctrl-C)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def signal_name(exc: BaseException) -> str:
    signum = getattr(exc, "signum", signal.SIGINT)
    return "interrupted" if signum == signal.SIGINT else \
        f"interrupted ({signal.Signals(signum).name})"


@contextlib.contextmanager
def terminations_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise Interrupted like Ctrl-C raises
    KeyboardInterrupt: the lock is released or the release switched back, and the exit says so."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    with _terminations_handled_by(handler):
        yield


@contextlib.contextmanager
def terminations_exit(first: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP run `first` (close the SSH connection, which
    ends the remote program and the threads reading it), then end the command (exit
    128+signum) through the normal unwinding (the terminal's mode is put back): for a command
    with a terminal, where a KeyboardInterrupt is sent on to the remote program as Ctrl-C
    instead of ending anything."""
    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(Exception):
            first()
        raise SystemExit(128 + signum)

    with _terminations_handled_by(handler):
        yield


@contextlib.contextmanager
def _terminations_handled_by(handler: Callable[[int, FrameType | None], None]
                             ) -> Iterator[None]:
    """SIGTERM and SIGHUP go to `handler` while the block runs (only the main thread may set
    handlers: elsewhere, nothing changes); the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def sigint_deferred(reraise: bool = False) -> Iterator[list[int]]:
    """Run a short block to its end even if Ctrl-C (or SIGTERM, SIGHUP) comes; the list it
    yields is non-empty if one came (then re-raised after the block when `reraise`)."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in signals}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if caught and reraise:
        raise KeyboardInterrupt if caught[0] == signal.SIGINT else Interrupted(caught[0])
