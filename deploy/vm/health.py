"""The health wait's decisions, fed one poll at a time: pure, so tests need no VM.

The flows poll over the persistent shell (a few ms a poll) and hand each result to a watch;
the watch says when the wait is over and why.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE = ("healthy", "unhealthy", "exited", "dead")


@dataclass
class ContainerWatch:
    """The service's container after `compose up`: over once Docker says healthy, unhealthy,
    exited or dead, or it runs `steady_polls` polls in a row with no health check; restarting
    twice is over too. `failed()` says what is wrong once it is over ('' if nothing)."""

    steady_polls: int = 15
    state: str = "none"
    steady: int = 0
    restarts: int = 0

    def poll(self, state: str) -> bool:
        """Take one poll of the container's state: True when the wait is over."""
        self.state = state or "missing"
        self.steady = self.steady + 1 if self.state == "running" else 0
        self.restarts += self.state == "restarting"
        return self.state in DONE or self.steady >= self.steady_polls or self.restarts >= 2

    def failed(self) -> str:
        return "" if self.state in ("healthy", "running") else self.state

    def timed_out(self) -> str:
        return f"timeout ({self.state})"


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
