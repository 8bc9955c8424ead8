"""Roles: one app over several hosts, each host in one named role (`[roles.NAME]` in deploy.toml).

A role names its hosts, what kind it is (`web`: health-checked over `health_url`, behind the
proxy when there is one; `worker`: the container's own health only) and, when it runs other
services than the default, its own `service` and `compose_file`. One deploy is one tag for all
roles: every host pulls first, the migration runs once on the primary role's first host, then the
hosts switch in batches (`batch_limit` at a time, `batch_wait` seconds between), the primary role
first. The first failing batch stops the deploy and switches its own hosts back; the hosts of
earlier batches keep the new release (or go back too with `rollback_all_on_failure`). One deploy
lock per app, held on the primary role's first host.

The per-host steps (pull, migrate, switch, record) are the remote flow's; this module orders them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

from deploy.errors import DeployError
from deploy.settings import SETTINGS_FILE, Settings, read_settings_file

KINDS = ("web", "worker")
ROLE_KEYS = ("hosts", "kind", "service", "compose_file", "health_url")


@dataclass(frozen=True)
class Role:
    """A named group of hosts that run the same services."""

    name: str
    hosts: tuple[str, ...]
    kind: str = "web"
    service: str = ""
    compose_file: str = ""
    health_url: str = ""


@dataclass(frozen=True)
class Slot:
    """One host of one role: what a batch switches."""

    role: str
    host: str

    def __str__(self) -> str:
        return f"{self.host} ({self.role})"


@dataclass(frozen=True)
class Plan:
    """Where the migration runs and the batches the hosts switch in, in order."""

    primary: Slot
    batches: tuple[tuple[Slot, ...], ...]

    @property
    def slots(self) -> list[Slot]:
        return [slot for batch in self.batches for slot in batch]


def _bad(message: str, fix: str) -> DeployError:
    return DeployError(message, fix)


def parse_roles(raw: object) -> list[Role]:
    """The `[roles.NAME]` tables of deploy.toml, validated (an empty list when there are none)."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise _bad(f"'roles' in {SETTINGS_FILE} must be tables ([roles.web], [roles.worker])",
                   'write [roles.web] with hosts = ["vm1"]')
    roles, seen = [], {}
    for name, table in raw.items():
        where = f"[roles.{name}] in {SETTINGS_FILE}"
        if not isinstance(table, dict):
            raise _bad(f"{where} must be a table", f'write [roles.{name}] with hosts = ["vm1"]')
        unknown = sorted(set(table) - set(ROLE_KEYS))
        if unknown:
            raise _bad(f"unknown key '{unknown[0]}' in {where}",
                       f"a role's keys are {', '.join(ROLE_KEYS)}")
        hosts = table.get("hosts")
        if (not isinstance(hosts, list) or not hosts
                or not all(isinstance(h, str) and h.strip() for h in hosts)):
            raise _bad(f"{where} needs hosts: a list of host names",
                       f'hosts = ["vm1", "vm2"] in [roles.{name}]')
        for host in hosts:
            if host in seen:
                raise _bad(f"host {host} is in roles {seen[host]} and {name}",
                           "give a host one role (its compose file can run several services)")
            seen[host] = name
        kind = table.get("kind", "web")
        if kind not in KINDS:
            raise _bad(f"kind in {where} must be one of {', '.join(KINDS)}, got {kind!r}",
                       f'kind = "web" or kind = "worker" in [roles.{name}]')
        for key in ("service", "compose_file", "health_url"):
            if not isinstance(table.get(key, ""), str):
                raise _bad(f"{key} in {where} must be a string", f"fix {key} in [roles.{name}]")
        roles.append(Role(name, tuple(h.strip() for h in hosts), kind,
                          table.get("service", ""), table.get("compose_file", ""),
                          table.get("health_url", "")))
    return roles


def read_roles(settings: Settings) -> list[Role]:
    """The roles of the app at `settings.root` ([] when deploy.toml has none)."""
    return parse_roles(read_settings_file(settings.root / SETTINGS_FILE).get("roles"))


def primary_role(roles: list[Role], name: str) -> Role:
    """The role named `primary_role` (default: the first one)."""
    if not name:
        return roles[0]
    for role in roles:
        if role.name == name:
            return role
    raise _bad(f"primary_role {name!r} is not one of the roles "
               f"({', '.join(r.name for r in roles)})", f"set primary_role to one of them in "
               f"{SETTINGS_FILE}")


def make_plan(roles: list[Role], primary: str = "", limit: int = 0) -> Plan:
    """The primary role first, then the others in the order written; each role's hosts in
    batches of `limit` (0: all of a role's hosts at once). A batch never mixes roles."""
    if limit < 0:
        raise _bad(f"batch_limit must be 0 (all hosts of a role at once) or more, got {limit}",
                   f"fix batch_limit in {SETTINGS_FILE}")
    first = primary_role(roles, primary)
    batches: list[tuple[Slot, ...]] = []
    for role in [first, *(r for r in roles if r is not first)]:
        slots = [Slot(role.name, h) for h in role.hosts]
        size = limit or len(slots)
        batches += [tuple(slots[i:i + size]) for i in range(0, len(slots), size)]
    return Plan(Slot(first.name, first.hosts[0]), tuple(batches))


def to_switch_back(plan: Plan, failed_batch: int, switched: list[Slot],
                   rollback_all: bool) -> list[Slot]:
    """After batch `failed_batch` failed: the switched hosts to put back, newest first. The
    failing host itself is put back by the switch; its batch's other switched hosts follow;
    earlier batches only with `rollback_all`."""
    own = set(plan.batches[failed_batch])
    return [s for s in reversed(switched) if rollback_all or s in own]


def host_settings(settings: Settings, role: Role, host: str) -> Settings:
    """The settings one host of `role` is deployed with."""
    return dataclasses.replace(
        settings,
        host=host,
        service=role.service or settings.service,
        compose_file=role.compose_file or settings.compose_file,
        # A worker answers no HTTP: its container's health (or a steady run) is the check.
        health_url=role.health_url or (settings.health_url if role.kind == "web" else ""),
        proxy=settings.proxy and role.kind == "web",  # a worker takes no requests
    )


def role_of(roles: list[Role], name: str) -> Role:
    return next(r for r in roles if r.name == name)


def configured(settings: Settings) -> bool:
    return bool(read_roles(settings))


def targets(settings: Settings, hosts: list[str] | None = None
            ) -> list[tuple[str, Settings, object]]:
    """(role name or '', the host's settings, its remote Target) for each host to act on:
    `-H` hosts (no roles) or else every role's hosts, else the settings' host(s)."""
    from deploy.remote import targets as remote_targets

    roles = [] if hosts else read_roles(settings)
    if not roles:
        return [("", settings, t) for t in remote_targets(settings, hosts)]
    plan = make_plan(roles, settings.primary_role, settings.batch_limit)
    out = []
    for slot in plan.slots:
        each = host_settings(settings, role_of(roles, slot.role), slot.host)
        (target,) = remote_targets(each, [slot.host])
        out.append((slot.role, dataclasses.replace(each, host=target.host), target))
    return out


# -- the orchestration ---------------------------------------------------------------------
@contextlib.contextmanager
def sessions(settings: Settings, plan: Plan, roles: list[Role], dry_run: bool
             ) -> Iterator[dict[Slot, object]]:
    """One connection per host, all opened before anything changes (an unreachable host
    stops the deploy there)."""
    from deploy.remote import session
    from deploy.remote import targets as remote_targets

    with contextlib.ExitStack() as stack:
        vms = {}
        for slot in plan.slots:
            each = host_settings(settings, role_of(roles, slot.role), slot.host)
            (target,) = remote_targets(each, [slot.host])
            vms[slot] = stack.enter_context(session(each, target, dry_run=dry_run))
        yield vms


Row = tuple[Slot, str, str, str]  # slot, recorded release, what the container runs, health


def report(vms: dict[Slot, object], tag: str) -> list[Row]:
    """What each host serves, asked of each VM now."""
    rows = []
    for slot, vm in vms.items():
        try:
            rows.append((slot, vm.current_tag(), vm.running_tag(), vm.health()))
        except DeployError as exc:  # a lost connection: say so, keep reporting the others
            rows.append((slot, "?", "", f"unknown ({exc.message})"))
    return rows


def print_report(rows: list[Row], tag: str, say) -> None:
    say("per host:")
    width = max(len(str(row[0])) for row in rows)
    for slot, recorded, running, health in rows:
        note = "" if running in (recorded, "") else f"  (its container runs {running})"
        mark = "new" if recorded == tag else "old"
        say(f"  {str(slot):<{width}}  serves {recorded or '(none)'}  [{mark}]  {health}{note}")


def switch_batches(vms: dict, plan: Plan, tag: str, previous: dict, settings: Settings,
                   record, say) -> tuple[list[Slot], tuple[Slot, DeployError] | None]:
    """Switch the plan's batches to `tag` (health-checked, recorded by `record(slot, vm)`);
    on the first failure put back what `to_switch_back` says and stop. Returns the switched
    hosts still on `tag` and the failure, if any."""
    from deploy.remote import switch_checked

    switched: list[Slot] = []
    for number, batch in enumerate(plan.batches):
        if number and settings.batch_wait > 0:
            say(f"waiting {settings.batch_wait:g}s before the next batch")
            time.sleep(settings.batch_wait)
        say(f"batch {number + 1}/{len(plan.batches)}: {', '.join(map(str, batch))}")
        for slot in batch:
            vm = vms[slot]
            try:
                switch_checked(vm, tag, previous[slot])
            except DeployError as exc:
                rollback_all = settings.rollback_all_on_failure
                for back in to_switch_back(plan, number, switched, rollback_all):
                    put_back(vms[back], tag, previous[back], f"{slot} failed")
                    switched.remove(back)
                return switched, (slot, exc)
            record(slot, vm)
            switched.append(slot)
    return switched, None


def put_back(vm, tag: str, previous: str, why: str) -> None:
    """Switch a host that already serves `tag` back to `previous` (through the same checked
    switch, behind the proxy or not) and record that; a failure is said, not raised."""
    from deploy.remote import release_entry, switch_checked

    if not previous:
        vm.runner.say(f"{vm.runner.where}: no previous release to switch back to; {tag} stays")
        return
    vm.runner.say(f"{why}; switching {vm.runner.where} back to {previous}")
    try:
        switch_checked(vm, previous, tag)
    except DeployError as exc:
        vm.runner.say(f"warning: {vm.runner.where} could not go back to {previous}: "
                      f"{exc.message}")
        return
    if not vm.runner.dry_run:
        vm.record(release_entry(previous, "", vm.revision(), "rollback", tag))


def plan_of(settings: Settings) -> Plan:
    return make_plan(read_roles(settings), settings.primary_role, settings.batch_limit)


def deploy(settings: Settings, tag: str, *, message: str = "", git_sha: str = "",
           dry_run: bool = False, vms: dict | None = None) -> list[Row]:
    """Deploy `tag` to every role's hosts (see the module's docstring). Returns the report.

    With `vms` (a session per slot, `inv deploy`) the caller already holds the lock."""
    from deploy import envcheck
    from deploy.remote import cut_short, last_revision, release_entry
    from deploy.shell import ConnectionLost

    roles = read_roles(settings)
    plan = make_plan(roles, settings.primary_role, settings.batch_limit)
    started = time.monotonic()
    given = vms is not None
    with contextlib.nullcontext(vms) if given else sessions(settings, plan, roles,
                                                              dry_run) as vms:
        first = vms[plan.primary]
        say = first.runner.say
        with contextlib.nullcontext() if given else first.locked(tag, message):
            previous, digests, step = {}, {}, "check"
            try:
                for slot, vm in vms.items():  # nothing switches before every host has the image
                    step = f"check on {slot}"
                    envcheck.require_app_env(vm)
                    previous[slot] = vm.current_tag()
                    vm.sync_release_env(previous[slot])
                    step = f"pull on {slot}"
                    digests[slot] = vm.pull(tag)
                step = f"backup on {plan.primary}"
                history = first.history()
                backup = first.backup(tag)
                step = f"migrate on {plan.primary}"
                revision = first.migrate(tag, backup) or last_revision(history)
            except (KeyboardInterrupt, ConnectionLost) as exc:
                raise cut_short(exc, step, tag, "the previous release") from None
            say(f"migrated once, on {plan.primary}: revision {revision or '-'}")

            def record(slot: Slot, vm) -> None:
                if not vm.runner.dry_run:
                    vm.record(release_entry(tag, digests[slot], revision, "deploy",
                                            previous[slot], git_sha, message))

            switched, failure = switch_batches(vms, plan, tag, previous, settings, record, say)
        rows = report(vms, tag) if not dry_run else []
        if rows:
            print_report(rows, tag, say)
    if failure:
        slot, exc = failure
        on_new = ", ".join(map(str, switched)) or "none"
        previous_any = previous.get(plan.primary) or "T"
        raise DeployError(f"{slot}: {exc.message}; hosts serving {tag}: {on_new}",
                          "fix what the message says and deploy again (hosts already on the "
                          f"new release are left alone); `fab rollback --tag={previous_any}` puts "
                          "every host back")
    say(f"deployed {tag} to {len(plan.slots)} host(s) in {time.monotonic() - started:.1f}s")
    return rows


def rollback(settings: Settings, tag: str = "", *, downgrade: bool = False, dry_run: bool = False,
             known_in_registry=None) -> list[Row]:
    """Put every role's hosts back on `tag` (default: the release before the primary host's
    current one), batch by batch, under the one lock; `downgrade` runs on the primary host."""
    from deploy.remote import pick_rollback_tag, release_entry

    roles = read_roles(settings)
    plan = plan_of(settings)
    with sessions(settings, plan, roles, dry_run) as vms:
        first = vms[plan.primary]
        say = first.runner.say
        history = first.history()
        target = pick_rollback_tag(history, first.current_tag(), tag)
        entries = {e["tag"]: e for e in history}
        if (target not in entries and not dry_run
                and not (known_in_registry and known_in_registry(target))):
            raise DeployError(f"{target} is neither in the release history nor in the registry",
                              "pick a tag from `fab releases`")
        with first.locked(target, action="rollback"):
            previous, digests = {}, {}
            for slot, vm in vms.items():
                previous[slot] = vm.current_tag()
                vm.sync_release_env(previous[slot])
                digests[slot] = vm.pull(target)
            wanted, now = entries.get(target, {}).get("revision", ""), first.revision()
            if downgrade and wanted and now and wanted != now:
                backup = first.backup(target)
                say(f"downgrading the schema {now} -> {wanted} on {plan.primary} "
                    f"(backup: {backup or 'none'})")
                first.run(first_downgrade(first, previous[plan.primary], wanted), hide=True,
                          what="the downgrade failed; nothing was switched",
                          fix="see the output above")

            def record(slot: Slot, vm) -> None:
                if not vm.runner.dry_run:
                    vm.record(release_entry(target, digests[slot], first.revision(),
                                            "rollback", previous[slot]))

            switched, failure = switch_batches(vms, plan, target, previous, settings, record,
                                               say)
        rows = report(vms, target) if not dry_run else []
        if rows:
            print_report(rows, target, say)
    if failure:
        slot, exc = failure
        raise DeployError(f"rolling back to {target} stopped at {slot}: {exc.message}",
                          "fix what the message says and run the rollback again")
    say(f"rolled back {len(plan.slots)} host(s) to {target}")
    return rows


def first_downgrade(vm, current: str, revision: str) -> list[str]:
    """`alembic downgrade REV` with the current image (it holds the downgrade scripts)."""
    from deploy.commands import vm as cmd

    return cmd.run_in_new_container(vm.compose(current), vm.settings.service,
                                    f"alembic downgrade {revision}")
