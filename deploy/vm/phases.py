"""One release on one VM as named phases: each is timed, and the release prints them on one
line as they happen, e.g. `[vm1] lock · check 0.3s · pull 0.4s · backup backups/….dump ·
migrate 0001→0002 1.6s · switch 1.1s · healthy 2.4s · recorded`.

A phase also says what cutting it short means: Ctrl-C, SIGTERM, SIGHUP or a lost connection in
a phase before the switch leave the previous release serving (`cut_short`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from deploy.core.errors import DeployError
from deploy.vm.shell import ConnectionLost
from deploy.vm.signals import exit_code, signal_name
from deploy.vm.steps import Vm


def cut_short(exc: BaseException, step: str, tag: str, previous: str) -> DeployError:
    """Ctrl-C, a signal or a dropped connection before the switch: what is left, what to do."""
    serving = f"{previous or 'the previous version'} is still serving"
    if isinstance(exc, KeyboardInterrupt):
        what, code = signal_name(exc), exit_code(exc)
        serving = f"{serving} and the lock was released"
    else:
        what, code = f"the SSH connection to {getattr(exc, 'where', 'the VM')} was lost", 1
        reason = getattr(exc, "reason", "")
        if reason:
            what += f" ({reason})"
        serving += "; the lock is released if the VM answered again, else `fab unlock` clears it"
    if step == "migrate":
        serving += " (the migration may still finish on the VM: the next deploy waits for it)"
    return DeployError(f"{what} during {step} of {tag}; {serving}",
                       "run the same deploy again (`fab status` shows what is serving)",
                       exit_code=code)


class Phase:
    """What a phase found, for its part of the line (`backup backups/x.dump`)."""

    def __init__(self) -> None:
        self.result = ""


class PhaseLine:
    """A release of `tag` on one VM (`previous` serving), printed as one line as it goes: a
    phase's name when it starts (so a slow step is named while it runs), its result and time
    when it ends. Output of another kind in between (a warning, `-v`'s commands, a command's
    own output) ends the line; the phase's name is then written again on its result's line."""

    def __init__(self, vm: Vm, tag: str, previous: str = "") -> None:
        self.vm = vm
        self.tag = tag
        self.previous = previous

    def note(self, text: str) -> None:
        """A part of the line that is no timed phase (`lock`, `recorded`)."""
        self.vm.runner.start_part(text)

    @contextlib.contextmanager
    def phase(self, name: str, *, cuts_short: bool = True, timed: bool = True
              ) -> Iterator[Phase]:
        """Name and time a step; a Ctrl-C, SIGTERM/SIGHUP or lost connection in it (when
        `cuts_short`) becomes the message saying the previous release still serves."""
        found = Phase()
        runner = self.vm.runner
        runner.start_part(name)
        started = time.monotonic()
        try:
            yield found
        except (KeyboardInterrupt, ConnectionLost) as exc:
            runner.end_part(name, "cut short")
            if cuts_short:
                raise cut_short(exc, name, self.tag, self.previous) from None
            raise
        except BaseException:
            runner.end_part(name, "failed")
            raise
        took = time.monotonic() - started
        runner.end_part(name, " ".join(
            p for p in (found.result, f"{took:.1f}s" if timed else "") if p))

    def __enter__(self) -> PhaseLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.vm.runner.end_line()


def optional_phase(release: PhaseLine | None, name: str, *, cuts_short: bool = True,
                   timed: bool = True) -> contextlib.AbstractContextManager[Phase]:
    """`release.phase(name)`, or nothing when the caller keeps no release (e.g. roles)."""
    return release.phase(name, cuts_short=cuts_short, timed=timed) if release else \
        contextlib.nullcontext(Phase())
