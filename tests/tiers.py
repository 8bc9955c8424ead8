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


# What one test of a tier costs, in seconds, roughly (CI's "time per tier": summed / tests): the
# estimate of a group nobody measured.
TIER_SECONDS = {"fast": 0.05, "slow": 1.5, "docker": 6.0, "sandbox": 20.0, "multivm": 75.0,
                "faults": 20.0}
# Groups whose measured time (CI's "longest xdist groups" and "heaviest modules") is far from
# that estimate: a test or two that run a whole release cycle each. Only the order in which
# workers take groups depends on these figures, never a result.
GROUP_SECONDS = {
    "tests/test_bench.py": 190, "tests/test_demo.py": 180, "tests/test_corpus_deploy.py": 190,
    "tests/test_restore_release.py": 175, "tests/test_roles_postgres.py": 110,
    "tests/test_shape_alembic18.py": 85, "tests/test_shape_poetry_venv.py": 70,
    "tests/test_shape_template.py": 70, "roles": 170, "swarm": 250,
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


def heaviest_first(groups: list[tuple[str, str]]) -> list[int]:
    """The order to hand out tests in, given each test's (group, tier) in collection order: the
    groups that cost most first (a group runs on one worker, so one that starts last and runs
    long ends the whole run last), each group's tests in their own order."""
    cost: dict[str, float] = {}
    for group, tier in groups:
        cost[group] = cost.get(group, 0.0) + TIER_SECONDS.get(tier, 0.0)
    cost.update((group, seconds) for group, seconds in GROUP_SECONDS.items() if group in cost)
    return sorted(range(len(groups)), key=lambda i: -cost[groups[i][0]])


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
