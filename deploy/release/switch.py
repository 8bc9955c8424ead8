"""The switch of one host to a release, checked: the one step of a release that differs by
target, one module per kind. `compose` recreates the service, waits for its health (as the VM
sees it) and checks the container runs the pulled image, switching back to the previous
release on failure (deploy/release/recreate.py); `proxy` starts the new container beside the
old one behind Caddy (deploy/release/bluegreen.py); `swarm` deploys the stack and waits for
Swarm, which rolls a failed task back itself (deploy/release/swarm.py).
"""

from __future__ import annotations

from deploy.release import bluegreen, recreate, swarm
from deploy.release.target import switch_kind
from deploy.vm.phases import PhaseLine, optional_phase
from deploy.vm.steps import Vm

PHASE = {"compose": recreate.PHASE, "proxy": "switch behind the proxy",
         "swarm": "switch the stack"}


def check_switch(vm: Vm) -> None:
    """What this host's switch needs before anything changes (a stack: a swarm manager)."""
    if switch_kind(vm.settings) == "swarm":
        swarm.require_manager(vm)


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
