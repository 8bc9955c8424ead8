"""The switch of one host to a release, checked: the one step of a release that differs by
target, one module per kind. `compose` recreates the service, waits for its health (as the VM
sees it) and checks the container runs the pulled image, switching back to the previous
release on failure (deploy/release/recreate.py); `proxy` starts the new container beside the
old one behind Caddy (deploy/release/bluegreen.py); `swarm` deploys the stack and waits for
Swarm, which rolls a failed task back itself (deploy/release/swarm.py).
A restore stops the app and starts it again the same way: compose stops and starts its
service; a stack's app service is scaled to 0, then the stack deployed again.
"""

from __future__ import annotations

from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.release import bluegreen, recreate, swarm
from deploy.release.target import switch_kind
from deploy.vm.phases import PhaseLine, optional_phase
from deploy.vm.steps import Vm

PHASE = {"compose": recreate.PHASE, "proxy": "switch behind the proxy",
         "swarm": "switch the stack"}


def check_switch(vm: Vm) -> None:
    """What this host's switch needs before anything changes (a stack: a swarm manager;
    behind the proxy: the app's host names, which Caddy routes it by)."""
    kind = switch_kind(vm.settings)
    if kind == "swarm":
        swarm.require_manager(vm)
    elif kind == "proxy":
        try:
            bluegreen.hosts(vm.settings)
        except DeployError as exc:
            raise DeployError(f"{exc.message}; nothing was changed", exc.fix) from None


def pins_digest(vm: Vm) -> bool:
    """Whether the switch runs the image pulled on this host (compose, proxy), so that a
    rollback pulling the recorded digest runs exactly it; a stack's nodes pull the tag from
    the registry themselves."""
    return switch_kind(vm.settings) != "swarm"


def switch_checked(vm: Vm, tag: str, previous: str, release: PhaseLine | None = None) -> None:
    """Switch to `tag` the way this host switches; on return `tag` serves, else a DeployError
    says what failed and what serves. The one place a release is switched (`release`, if
    given, gets the switch's phases)."""
    kind = switch_kind(vm.settings)
    if kind == "proxy":
        with optional_phase(release, PHASE[kind], cuts_short=False) as seen:
            return bluegreen.switch_checked(vm, tag, previous, seen)
    if kind == "swarm":
        with optional_phase(release, PHASE[kind], cuts_short=False):
            return swarm.stack_switch(vm, tag, previous)
    return recreate.switch_checked(vm, tag, previous, release)


def stop_app(vm: Vm, what: str = "") -> None:
    """Stop the app for a restore: its compose service, or a stack's app service scaled to 0
    (waited for until no task of it runs). Behind the proxy, an old container the last
    switch still stops is waited for first: `compose up` must find only the serving one."""
    kind = switch_kind(vm.settings)
    if kind == "swarm":
        return swarm.scale_to_zero(vm)
    if kind == "proxy":
        bluegreen.wait_retired(vm)
    vm.run(cmd.stop(vm.compose(), vm.settings.service), hide=True, what=what,
           fix="see the message above" if what else "")


def start_app(vm: Vm, tag: str) -> str:
    """Start the app stopped by stop_app at release `tag` (its release files written):
    compose `up` (its health is checked after, by the caller), or the stack deployed at `tag`
    and waited for as a switch is: '' when it runs, else what Swarm did instead."""
    if switch_kind(vm.settings) == "swarm":
        return swarm.start_stack(vm, tag)
    vm.run(cmd.up(vm.compose()), hide=True)
    return ""


def health_checked_at_start(vm: Vm) -> bool:
    """Whether start_app waited for the app's health itself (a stack: Swarm's healthcheck)."""
    return switch_kind(vm.settings) == "swarm"
