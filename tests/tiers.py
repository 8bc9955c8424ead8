"""Test tiers, decided by the fixtures a test uses, and the groups that keep tests which share
a machine on one xdist worker.

A test's tier is the most demanding of its fixtures' tiers; nobody marks tests by hand (a
test that needs Docker without asking for a Docker fixture fails in the fast tier, which CI runs
with the engine unreachable). `slow` is the one marker given by hand: tests that need neither
Docker nor a VM but reach PyPI or take seconds each.
"""

from __future__ import annotations

from collections.abc import Iterable

# Most demanding last: a test's tier is the last one any of its fixtures needs.
TIERS = ("fast", "slow", "docker", "sandbox", "multivm", "faults")
FIXTURE_TIERS: dict[str, str] = {
    # an `inv` process or an app repo of its own per test: a second or more each
    "inv": "slow", "example_repo": "slow",
    # the laptop's engine and registry
    "docker_cli": "docker", "docker_engine": "docker", "registry": "docker",
    "base_image": "docker", "built": "docker", "pg_image": "docker", "poetry_app": "docker",
    "real_postgres": "docker",
    # sandbox VMs that tests share (each app in its own directory and port)
    "sandbox": "sandbox", "sb": "sandbox", "vm1": "sandbox", "two_vms": "sandbox",
    "images": "sandbox", "pg_images": "sandbox", "make_app": "sandbox", "sshd": "sandbox",
    "caddy": "sandbox", "sshd_vm": "sandbox",
    # VMs of their own, joined to others
    "three_vms": "multivm", "swarm": "multivm",
    # VMs whose engine, sshd or disk a test breaks
    "fault_vms": "faults", "pg_fault_vm": "faults",
    "roles_fault_vms": "faults", "swarm_faults": "faults",
}
# Tests that break a VM run one after another on one worker, per VM they break.
FIXTURE_GROUPS: dict[str, str] = {
    "pg_fault_vm": "faults-postgres",
    "fault_vms": "faults",
    "roles_fault_vms": "faults-roles",
    "swarm_faults": "swarm",  # the swarm's VMs: one worker with test_swarm_live.py
    "swarm": "swarm",
    "three_vms": "roles",
    "sshd_vm": "sshd",  # its sshd's log counts one test's connections
}


def tier_of(fixtures: Iterable[str], marked_slow: bool = False) -> str:
    """The tier of a test using `fixtures`."""
    needed = {FIXTURE_TIERS[name] for name in fixtures if name in FIXTURE_TIERS}
    if marked_slow:
        needed.add("slow")
    return max(needed, key=TIERS.index, default="fast")


def group_of(fixtures: Iterable[str], module: str) -> str:
    """The xdist group of a test: the VM it breaks, else its module (whose session and module
    fixtures, the images it builds, are then made once)."""
    names = set(fixtures)
    for fixture, group in FIXTURE_GROUPS.items():
        if fixture in names:
            return group
    return module


def selected(tier: str, wanted: str) -> bool:
    """Whether `--tier=wanted` runs a test of `tier`: a comma-separated list of tiers, or
    `all`."""
    choice = {name.strip() for name in wanted.split(",")}
    return "all" in choice or tier in choice


def parse_tiers(wanted: str) -> str:
    """`wanted` checked: each name a tier or `all`; raises ValueError naming the bad one."""
    for name in (n.strip() for n in wanted.split(",")):
        if name != "all" and name not in TIERS:
            raise ValueError(f"unknown tier {name!r}: choose from all, {', '.join(TIERS)}")
    return wanted
