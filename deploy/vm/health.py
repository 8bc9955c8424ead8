"""The proxy's health wait's decisions, fed one poll at a time: pure, so tests need no VM.

The blue/green switch polls over the persistent shell (a few ms a poll) and hands each result
to the watch; the watch says when the wait is over and why. (Without the proxy the container
is waited for by the helper's health-state-wait, on the VM.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class UpstreamWatch:
    """The health wait's decisions, fed one poll at a time (no VM needed): the new container
    must be healthy for Docker (or running, with no healthcheck) AND answer 200 through Caddy
    `passes` times in a row. unhealthy/exited/dead/missing fail at once, restarting twice
    fails; `timed_out()` says the last state and code."""

    passes: int = 3
    state: str = "none"
    code: str = "-"
    ok: int = 0
    restarts: int = 0

    def poll(self, state: str, code: str) -> str | None:
        """Take one poll: '' when healthy, a problem when it failed, None to poll again."""
        self.state, self.code = state or "missing", code or "-"
        if self.state in ("unhealthy", "exited", "dead", "missing"):
            return self.state
        if self.state == "restarting":
            self.restarts += 1
            if self.restarts >= 2:
                return "restarting"
        self.ok = self.ok + 1 if self.code == "200" else 0
        if self.state in ("healthy", "running") and self.ok >= self.passes:
            return ""
        return None

    def timed_out(self) -> str:
        return f"timeout ({self.state}, {self.code} through the proxy)"
