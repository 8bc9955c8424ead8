"""Roles: one app over several hosts, each host in one named role (`[roles.NAME]` in deploy.toml).

A role names its hosts, what kind it is (`web`: health-checked over `health_url`, behind the
proxy when there is one; `worker`: the container's own health only) and, when it runs other
services than the default, its own `service` and `compose_file`. One deploy is one tag for all
roles: every host pulls first, the migration runs once on the primary role's first host, then the
hosts switch in batches (`batch_limit` at a time, `batch_wait` seconds between), the primary role
first. The first failing batch stops the deploy and switches its own hosts back; the hosts of
earlier batches keep the new release (or go back too with `rollback_all_on_failure`). One deploy
lock per app, held on the primary role's first host.

A roles deploy is the one sequence of a deploy (deploy/release/sequence.py) over the roles' plan;
as are a roles rollback and restore. This module opens the hosts' sessions, reports what each
host serves and says the outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.release import sequence
from deploy.release.roleplan import (  # noqa: F401  (the roles' model, re-exported)
    KINDS,
    ROLE_KEYS,
    Plan,
    Role,
    Slot,
    configured,
    database_place,
    host_settings,
    make_plan,
    parse_roles,
    plan_of,
    primary_role,
    read_roles,
    role_of,
    to_switch_back,
)
from deploy.vm.flows import validate_backup_name
from deploy.vm.session import Target, session
from deploy.vm.session import targets as remote_targets
from deploy.vm.steps import Vm

Say = Callable[[str], None]


def targets(settings: Settings, hosts: list[str] | None = None
            ) -> list[tuple[str, Settings, Target]]:
    """(role name or '', the host's settings, its remote Target) for each host to act on:
    `-H` hosts (no roles) or else every role's hosts, else the settings' host(s)."""
    roles = [] if hosts else read_roles(settings)
    if not roles:
        return [("", settings, t) for t in remote_targets(settings, hosts)]
    plan = make_plan(roles, settings.primary_role, settings.batch_limit,
                     database_place(settings))
    out = []
    for slot in plan.slots:
        each = host_settings(settings, role_of(roles, slot.role), slot.host)
        (target,) = remote_targets(each, [slot.host])
        out.append((slot.role, dataclasses.replace(each, host=target.host), target))
    return out


# -- the orchestration ---------------------------------------------------------------------
@contextlib.contextmanager
def sessions(settings: Settings, plan: Plan, roles: list[Role], dry_run: bool
             ) -> Iterator[dict[Slot, Vm]]:
    """One connection per host, all opened before anything changes (an unreachable host
    stops the deploy there)."""
    with contextlib.ExitStack() as stack:
        vms = {}
        for slot in plan.slots:
            each = host_settings(settings, role_of(roles, slot.role), slot.host)
            (target,) = remote_targets(each, [slot.host])
            vms[slot] = stack.enter_context(session(each, target, dry_run=dry_run))
        yield vms


Row = tuple[Slot, str, str, str]  # slot, recorded release, what the container runs, health


def report(vms: dict[Slot, Vm], tag: str) -> list[Row]:
    """What each host serves, asked of each VM now."""
    rows: list[Row] = []
    for slot, vm in vms.items():
        try:
            rows.append((slot, vm.current_tag(), vm.running_tag(), vm.health()))
        except DeployError as exc:  # a lost connection: say so, keep reporting the others
            rows.append((slot, "?", "", f"unknown ({exc.message})"))
    return rows


def print_report(rows: list[Row], tag: str, say: Say) -> None:
    say("per host:")
    width = max(len(str(row[0])) for row in rows)
    for slot, recorded, running, health in rows:
        note = "" if running in (recorded, "") else f"  (its container runs {running})"
        mark = "new" if recorded == tag else "old"
        say(f"  {str(slot):<{width}}  serves {recorded or '(none)'}  [{mark}]  {health}{note}")


def deploy(settings: Settings, tag: str, *, message: str = "", git_sha: str = "",
           dry_run: bool = False, vms: dict[Slot, Vm] | None = None, digest: str = "",
           before_change: Callable[[str], None] | None = None) -> list[Row]:
    """Deploy `tag` to every role's hosts (see the module's docstring), in the one sequence of
    a deploy (deploy/release/sequence.py): `digest` (a promotion) and `before_change` (the
    pre-deploy hook) as on one host. Returns the report.

    With `vms` (a session per slot, `inv deploy`) the caller already holds the lock."""
    roles = read_roles(settings)
    plan = make_plan(roles, settings.primary_role, settings.batch_limit,
                     database_place(settings))
    started = time.monotonic()
    given = vms is not None
    with contextlib.nullcontext(vms) if vms is not None else sessions(settings, plan, roles,
                                                                      dry_run) as vms:
        say = vms[plan.primary].runner.say
        out = sequence.deploy(plan, vms, tag, git_sha=git_sha, message=message, lock=not given,
                              digest=digest, before_change=before_change)
        rows = report(vms, tag) if not dry_run else []
        if rows:
            print_report(rows, tag, say)
    if out.failure:
        slot, error = out.failure
        kept = [s for s in plan.slots if s not in out.todo]  # on `tag` before this run
        on_new = ", ".join(map(str, sorted([*kept, *out.switched], key=plan.slots.index))) \
            or "none"
        previous_any = out.previous.get(plan.primary) or "T"
        raise DeployError(f"{slot}: {error.message}; hosts serving {tag}: {on_new}",
                          "fix what the message says and deploy again (hosts already on the "
                          f"new release are left alone); `fab rollback --tag={previous_any}` puts "
                          "every host back", exit_code=error.exit_code)
    already = len(plan.slots) - len(out.todo)
    say(f"deployed {tag} to {len(out.todo)} host(s)"
        + (f" ({already} served it already)" if already else "")
        + f" in {time.monotonic() - started:.1f}s")
    return rows


def rollback(settings: Settings, tag: str = "", *, downgrade: bool = False, dry_run: bool = False,
             known_in_registry: Callable[[str], bool] | None = None) -> list[Row]:
    """Put every role's hosts back on `tag` (default: the release before the primary host's
    current one), batch by batch, under the one lock, in the one sequence of a rollback
    (deploy/release/sequence.py); `downgrade` runs on the primary host. Returns the report."""
    roles = read_roles(settings)
    plan = plan_of(settings)
    with sessions(settings, plan, roles, dry_run) as vms:
        say = vms[plan.primary].runner.say
        out = sequence.rollback(plan, vms, tag, downgrade=downgrade,
                                known_in_registry=known_in_registry)
        target = out.tag
        rows = report(vms, target) if not dry_run else []
        if rows:
            print_report(rows, target, say)
    if out.failure:
        slot, error = out.failure
        raise DeployError(f"rolling back to {target} stopped at {slot}: {error.message}",
                          "fix what the message says and run the rollback again")
    if out.problem:
        name = out.backup.removeprefix(f"{cmd.BACKUP_DIR}/")
        raise DeployError(
            f"every host serves {target} and is recorded, but the downgrade {out.schema} "
            f"failed:\n{out.problem}",
            "look at the migration's downgrade() and the database, then `fab rollback "
            f"--tag={target} --downgrade` again"
            + (f"; `fab restore --backup={name}` puts back the copy taken before it"
               if name else ""))
    say(f"rolled back {len(plan.slots)} host(s) to {target}")
    return rows


def restore(settings: Settings, name: str, *, force_unverified: bool = False,
            dry_run: bool = False, tag: str = "") -> None:
    """Restore backup `name` where the database is (the primary role's first host, where
    deploys back up and migrate), the app stopped on every other host meanwhile so that none
    writes to the database being replaced; then start them and check each one's health, in
    the one sequence of a restore (deploy/release/sequence.py). When the backup's schema is
    not the serving release's, every host then runs the release on its schema (`tag`, or the
    one the primary's history names)."""
    roles = read_roles(settings)
    plan = plan_of(settings)
    validate_backup_name(name)
    with sessions(settings, plan, roles, dry_run) as vms:
        problems = sequence.restore(plan, vms, name, force_unverified=force_unverified, tag=tag)
    if problems:
        raise DeployError("after the restore, not every host is healthy: " + "; ".join(problems),
                          "look at `fab logs` on those hosts; `fab status` shows each host")
