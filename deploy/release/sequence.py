"""The one sequence of each action over a plan of hosts, whatever the plan and the target.

A deploy is lock → check (every host) → the pre-deploy hook → pull (every host) → backup +
migrate (once, where the database is) → switch (batch by batch, each host health-checked and
recorded) → prune. A one-host release is a plan of one slot (`deploy_host`), roles are a plan of
batches (deploy/release/roles.py), a Swarm manager a plan of one slot whose switch is `stack
deploy`: only the switch differs (deploy/release/switch.py), so the phases, backup names,
pruning and what is left serving hold for every target. A rollback is lock → check (every host)
→ pull the recorded image (every host) → backup (with --downgrade, where the database is) →
switch per batch → downgrade → record (`rollback`, `rollback_host`). A restore is lock → check
→ maintenance page → stop the other hosts → stop, save, restore, start, health, record where the
database is → start the other hosts (`restore`, `restore_host`).

What differs between a host and roles is presentation (`View`): one host's phases are one line,
as `fab deploy` prints them; roles' a line per host and step, with the batches named and each
failure prefixed with the host it happened on. And one choice: `fab deploy` of the tag a host
serves deploys it again there (`redeploy`, as it always did), where roles leave a host that
serves it healthy alone (an earlier run that stopped at a later batch switched it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

from deploy.commands import vm as cmd
from deploy.core import refs
from deploy.core.errors import DeployError
from deploy.release import maintenance, switch
from deploy.release.roleplan import Plan, Slot, to_switch_back
from deploy.release.switch import stop_app, switch_checked
from deploy.vm.contract import refuse_moving_tag
from deploy.vm.flows import (
    Migrated,
    backup_and_migrate,
    check_release,
    check_rollback,
    healthy_after_start,
    last_revision,
    left_alone,
    pick_rollback_tag,
    prune_after,
    record_release,
    release_entry,
    replace_database,
    restore_entry,
    restore_match,
    start_release,
    validate_backup_name,
    will_downgrade,
)
from deploy.vm.phases import PhaseLine, cut_short
from deploy.vm.shell import ConnectionLost
from deploy.vm.signals import exit_code, sigint_deferred, signal_name
from deploy.vm.steps import Vm

Record = Callable[[Slot, Vm, PhaseLine], None]


def one_slot(vm: Vm) -> tuple[Plan, dict[Slot, Vm]]:
    """The plan of one host: one slot, the primary (where the database is), in one batch."""
    slot = Slot("", vm.runner.where)
    return Plan(slot, ((slot,),)), {slot: vm}


class View:
    """How a release over `plan` is printed. One host (`single`): every phase on one line
    (`[vm1] lock · check · pull · backup · migrate · switch · healthy · recorded · prune`),
    errors as the phase says them. Roles (a role may have one host): a line per host and
    step, the batches named, an error prefixed with its host, a Ctrl-C between phases said
    as cut short."""

    def __init__(self, plan: Plan, vms: dict[Slot, Vm], tag: str, single: bool = False
                 ) -> None:
        self.plan = plan
        self.vms = vms
        self.tag = tag
        self.single = single and len(plan.slots) == 1
        self.whole: PhaseLine | None = None  # one host's line, open for the whole release

    @contextlib.contextmanager
    def release(self, previous: str = "") -> Iterator[None]:
        """The whole release (`previous` serving on the primary host)."""
        if not self.single:
            yield
            return
        with PhaseLine(self.vms[self.plan.primary], self.tag, previous) as self.whole:
            yield

    @contextlib.contextmanager
    def line(self, slot: Slot, previous: str = "") -> Iterator[PhaseLine]:
        """The phase line of `slot`'s next steps (`previous` serving there)."""
        if self.whole:
            self.whole.previous = previous or self.whole.previous
            yield self.whole
            return
        with PhaseLine(self.vms[slot], self.tag, previous) as rel:
            yield rel

    def say(self, text: str) -> None:
        """A line several hosts need to tell their steps apart (one host's phases say it)."""
        if not self.single:
            self.vms[self.plan.primary].runner.say(text)

    @contextlib.contextmanager
    def on(self, slot: Slot) -> Iterator[None]:
        """An error in the block names `slot` (several hosts)."""
        try:
            yield
        except DeployError as exc:
            if self.single:
                raise
            raise DeployError(f"{slot}: {exc.message}", exc.fix,
                              exit_code=exc.exit_code) from None

    def cut_short(self, exc: KeyboardInterrupt | ConnectionLost, step: str, previous: str
                  ) -> BaseException:
        """Ctrl-C or a lost connection before the switch, between phases (a phase says it
        itself): several hosts name the step; one host lets it through as it comes."""
        return exc if self.single else cut_short(exc, step, self.tag, previous)


@dataclasses.dataclass
class Outcome:
    """What a release of `tag` over a plan did: the history entry of each host it recorded,
    the hosts it acted on (`todo`; the others served the release already), those still on it
    after a failing batch, and the failure (the host and its error), if any."""

    tag: str
    previous: dict[Slot, str]
    todo: list[Slot]
    entries: dict[Slot, dict] = dataclasses.field(default_factory=dict)
    switched: list[Slot] = dataclasses.field(default_factory=list)
    failure: tuple[Slot, DeployError] | None = None
    problem: str = ""  # a rollback's downgrade that failed, every switched host recorded
    schema: str = ""  # the downgrade's `NOW -> WANTED`
    backup: str = ""  # the backup taken before it


def switch_batches(view: View, tag: str, previous: dict[Slot, str], record: Record | None,
                   todo: list[Slot] | None = None) -> tuple[list[Slot],
                                                          tuple[Slot, DeployError] | None]:
    """Switch the plan's batches to `tag` (each host health-checked, then recorded by
    `record(slot, vm, line)`; None: the caller records them afterwards), the hosts in `todo`
    only (default: all; a batch with none is skipped); on the first failure put back what
    `to_switch_back` says and stop. Returns the switched hosts still on `tag` and the
    failure, if any."""
    plan, vms = view.plan, view.vms
    holder = vms[plan.primary]  # the deploy lock's host
    settings = holder.settings
    switched: list[Slot] = []
    waiting = False
    for number, batch in enumerate(plan.batches):
        slots = [slot for slot in batch if todo is None or slot in todo]
        if not slots:
            continue
        if waiting and settings.batch_wait > 0:
            view.say(f"waiting {settings.batch_wait:g}s before the next batch")
            time.sleep(settings.batch_wait)
        waiting = True
        view.say(f"batch {number + 1}/{len(plan.batches)}: {', '.join(map(str, slots))}")
        for slot in slots:
            vm = vms[slot]
            failed: DeployError | None = None
            with view.line(slot, previous[slot]) as rel:  # the host's line of phases
                holder.hold_lock(previous[slot])
                try:
                    switch_checked(vm, tag, previous[slot], rel)
                except DeployError as exc:
                    failed = exc
                else:
                    if record:
                        record(slot, vm, rel)
            if failed:
                for back in to_switch_back(plan, number, switched,
                                           settings.rollback_all_on_failure):
                    put_back(vms[back], tag, previous[back], f"{slot} failed")
                    switched.remove(back)
                return switched, (slot, failed)
            switched.append(slot)
    return switched, None


def put_back(vm: Vm, tag: str, previous: str, why: str) -> None:
    """Switch a host that already serves `tag` back to `previous` (through the same checked
    switch, behind the proxy or not) and record that; a failure is said, not raised."""
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


def deploy(plan: Plan, vms: dict[Slot, Vm], tag: str, *, git_sha: str = "", message: str = "",
           lock: bool = True, digest: str = "", redeploy: bool = False, single: bool = False,
           before_change: Callable[[str], None] | None = None) -> Outcome:
    """Deploy `tag` over `plan` (`vms`: a session per slot), in the module's one order.

    With lock=False the caller already holds the deploy lock on the primary host (`inv
    deploy` takes it first). With `digest`, exactly that image is pulled and named TAG (a
    promotion). `before_change(previous tag on the primary)` runs after every host's checks,
    before anything changes (the pre-deploy hook). A host that serves `tag` healthy already
    is left alone (an earlier run that stopped at a later host switched it), unless
    `redeploy`. `single`: printed as one host (View). A failing switch: one host raises its
    error; roles return it in the Outcome, the batch's hosts put back (every host with
    `rollback_all_on_failure`)."""
    refuse_moving_tag(refs.validate_tag(tag))
    primary = vms[plan.primary]
    view = View(plan, vms, tag, single)
    out = Outcome(tag, {}, [])
    previous = out.previous
    digests: dict[Slot, str] = {}
    with view.release(), primary.locked(tag, message) if lock else contextlib.nullcontext():
        step = "check"
        try:
            for slot in plan.slots:  # nothing is pulled before every host is checked
                with view.line(slot) as rel:
                    if slot == plan.primary and lock:
                        rel.note("lock")
                    step = f"check on {slot}"
                    previous[slot] = check_release(vms[slot], rel, tag)
                    if not redeploy and left_alone(vms[slot], tag):
                        rel.note(f"serves {tag} healthy already: left alone")
                        continue
                out.todo.append(slot)
            if before_change:
                step = "the pre-deploy hook"
                before_change(previous[plan.primary])
            for slot in out.todo:  # nothing switches before every host has the image
                step = f"pull on {slot}"
                with view.line(slot, previous[slot]) as rel, rel.phase("pull"):
                    digests[slot] = vms[slot].pull_recorded(tag, digest)
            others = [slot for slot in out.todo if slot != plan.primary]
            if others:  # the migration proves it on the primary; the others ask
                step = f"database on {plan.primary}"
                primary.start_database(tag)  # a first deploy has none running yet
                for slot in others:
                    step = f"database check on {slot}"
                    vms[slot].check_database_reach(tag, str(plan.primary), str(slot))
            step = f"backup on {plan.primary}"
            if plan.primary in out.todo:
                with view.on(plan.primary), view.line(plan.primary,
                                                      previous[plan.primary]) as rel:
                    done = backup_and_migrate(primary, rel, tag, previous[plan.primary])
                view.say(f"migrated once, on {plan.primary}: revision "
                         f"{done.revision or last_revision(done.history) or '-'}")
            else:  # it took `tag` (and its migration) in an earlier run: no second backup
                history = primary.history()
                done = Migrated("", last_revision(history), "", history)
        except (KeyboardInterrupt, ConnectionLost) as exc:
            raise view.cut_short(exc, step, "the previous release") from None
        asked: list[str] = []  # the revision recorded, asked once after the first switch

        def record(slot: Slot, vm: Vm, rel: PhaseLine) -> None:
            if not asked:  # no migration ran (or its revision is unknown): ask the database
                asked.append(done.revision or primary.revision() or done.before)
            revision = asked[0]
            primary.hold_lock(f"{tag} (switched, not recorded)")
            out.entries[slot] = record_release(vm, release_entry(
                tag, digests[slot], revision, "deploy", previous[slot], git_sha, message,
                **(done.recorded(revision) if slot == plan.primary else {})), rel)

        out.switched, out.failure = switch_batches(view, tag, previous, record, out.todo)
        if out.failure and view.single:
            raise out.failure[1]
        if plan.primary in out.switched:  # the backups are where it migrated
            primary.prune_backups([*done.history, out.entries[plan.primary]])
        if not out.failure:
            for slot in out.todo:
                with view.line(slot) as rel:
                    prune_after(vms[slot], rel)
    return out


def deploy_host(vm: Vm, tag: str, *, git_sha: str = "", message: str = "",
                lock: bool = True, announce: bool = True, digest: str = "",
                before_change: Callable[[str], None] | None = None) -> dict:
    """Deploy `tag` on one host: the plan of one slot, every phase on one line. Returns the
    history entry. A host serving `tag` already deploys it again (`fab deploy` of the same
    tag redeploys; `inv deploy` leaves it alone itself). With announce=False the caller
    prints the closing `done:` line."""
    started = time.monotonic()
    plan, vms = one_slot(vm)
    out = deploy(plan, vms, tag, git_sha=git_sha, message=message, lock=lock, digest=digest,
                 redeploy=True, single=True, before_change=before_change)
    if announce:
        print(f"done: {vm.ref(tag)} on {vm.runner.where} in {time.monotonic() - started:.1f}s",
              file=vm.runner.out, flush=True)
    return out.entries[plan.primary]


def rollback(plan: Plan, vms: dict[Slot, Vm], tag: str = "", *, downgrade: bool = False,
             known_in_registry: Callable[[str], bool] | None = None, single: bool = False
             ) -> Outcome:
    """Put every host of `plan` back on an earlier release (`tag`, default the one before the
    primary host's current one), the image it recorded, in the one order of a rollback: lock
    → check (every host) → pull (every host) → backup (with `downgrade`, where the database
    is) → switch per batch → downgrade the schema → record. The older release switches first
    on the newer schema (expand/contract: a release runs on the schema of the one after it),
    so no host runs the newer release on the older schema.

    `single`: printed as one host (View). A failing switch: one host raises its error; roles
    return it in the Outcome, as a failed downgrade (`Outcome.problem`), the hosts recorded."""
    if tag:  # before anything runs on a VM
        refuse_moving_tag(refs.validate_tag(tag))
    primary = vms[plan.primary]
    history = primary.history()
    current = primary.current_tag()
    target = refuse_moving_tag(pick_rollback_tag(history, current, tag))
    entries = {e["tag"]: e for e in history}
    # The schema a release was deployed with: a rollback records the database's revision then,
    # which (without --downgrade) is newer than the release itself.
    deployed = {e["tag"]: e for e in history if e.get("action", "deploy") == "deploy"}
    # a dry run reads no history and asks no registry: it shows the commands for `tag`
    if target not in entries and not primary.runner.dry_run \
            and not (known_in_registry and known_in_registry(target)):
        raise DeployError(f"{target} is neither in the release history nor in the registry",
                          "pick a tag from `fab releases`")
    # the image the release recorded where it migrated: the same on every host
    recorded = deployed.get(target) or entries.get(target, {})
    view = View(plan, vms, target, single)
    out = Outcome(target, {plan.primary: current}, list(plan.slots))
    previous = out.previous
    digests: dict[Slot, str] = {}
    with view.release(current), primary.locked(target, action="rollback"):
        for slot in plan.slots:
            vm = vms[slot]
            if slot not in previous:
                previous[slot] = vm.current_tag()
            with view.line(slot, previous[slot]) as rel:
                if slot == plan.primary:
                    rel.note("lock")
                check_rollback(vm, rel, target, previous[slot])
        for slot in plan.slots:  # nothing switches before every host has the image
            vm = vms[slot]
            with view.line(slot, previous[slot]) as rel, \
                    rel.phase("pull", cuts_short=False) as found:
                pinned = switch.pins_digest(vm)
                digests[slot] = vm.pull_recorded(
                    target, recorded.get("digest", "") if pinned else "")
                if recorded.get("digest") and pinned:
                    found.result = f"{digests[slot][:19]} (as recorded)"
        wanted = recorded.get("revision", "")
        now = primary.revision()
        downgrading = downgrade and will_downgrade(primary, target, wanted, now)
        backup = ""
        if downgrading:  # the copy to go back to, taken before anything changes
            with view.line(plan.primary, current) as rel, \
                    rel.phase("backup", cuts_short=False, timed=False) as found:
                backup = primary.backup(target, current, revision=now,
                                        reason=f"before downgrading to {wanted}")
                found.result = backup or "none"
        elif wanted and now and wanted != now:
            primary.runner.say(
                f"warning: {target} was released with schema {wanted}, the database is at "
                f"{now}; not downgrading (pass --downgrade to run `{primary.alembic} downgrade "
                f"{wanted}`)")
        asked: list[str] = []  # the revision recorded, asked once after the first switch

        def record(slot: Slot, vm: Vm, rel: PhaseLine | None) -> None:
            if not asked:
                downgraded = downgrading and not out.failure and not out.problem
                # Without a downgrade the schema is the one read before the switch: asking
                # the older image again would say it or nothing (a newer revision it does not
                # know). With a downgrade (done or failed half-way), or when that read said
                # nothing, it is asked.
                asked.append(primary.revision() or (wanted if downgraded else now)
                             if downgrading or not now else now)
            primary.hold_lock(f"{target} (switched, not recorded)")
            out.entries[slot] = record_release(vm, release_entry(
                target, digests[slot], asked[0], "rollback", previous[slot]), rel)

        # With `downgrade`, every switched host is recorded once the schema is known.
        out.switched, out.failure = switch_batches(view, target, previous,
                                                   None if downgrading else record)
        if out.failure and view.single:
            raise out.failure[1]
        if downgrading:
            if not out.failure:
                primary.hold_lock(f"{target} (switched, not recorded)")
                out.schema, out.backup = f"{now} -> {wanted}", backup
                out.problem = downgrade_serving(view, out, target, now, wanted, backup,
                                                digests)
            for slot in out.switched:
                if slot not in out.entries:
                    with view.line(slot, previous[slot]) as rel:
                        record(slot, vms[slot], rel)
    return out


def downgrade_serving(view: View, out: Outcome, target: str, now: str, wanted: str,
                      backup: str, digests: dict[Slot, str]) -> str:
    """Downgrade the schema `now` -> `wanted` on the primary host with the image of the release
    it served (it holds the downgrade scripts) while `target` serves on every switched host.
    A failure or an interruption records each switched host with the revision the database
    is at, then says so: `target` serves either way. Returns what failed ('' if it did not):
    roles say it after their report; one host raises it here."""
    plan, vms = view.plan, view.vms
    primary = vms[plan.primary]
    current = out.previous[plan.primary]
    # No maintenance page here: the release that serves runs on both schemas (expand/contract),
    # so users lose no request while the schema goes back.
    where = f"with {current}" if view.single else f"on {plan.primary}"
    primary.runner.say(f"downgrading the schema {now} -> {wanted} {where}, {target} serving "
                       f"(backup: {backup or 'none'})")
    try:
        with view.line(plan.primary, current) as rel:
            with rel.phase("downgrade", cuts_short=False) as found:
                found.result = f"{now}→{wanted}"
                primary.downgrade(current, wanted)  # in the migrate command's environment
    except ConnectionLost:
        raise
    except (KeyboardInterrupt, DeployError) as exc:
        interrupted = not isinstance(exc, DeployError)
        with sigint_deferred():
            revision = primary.revision() or ("" if interrupted else now)
            for slot in out.switched:
                out.entries[slot] = record_release(vms[slot], release_entry(
                    target, digests[slot], revision, "rollback", out.previous[slot]))
        name = backup.removeprefix(f"{cmd.BACKUP_DIR}/")
        # the downgrade's own output, after the runner's first line
        output = exc.message.partition("\n")[2] if isinstance(exc, DeployError) else ""
        if isinstance(exc, DeployError) and not view.single:
            return output or exc.message
        if interrupted:
            what = (f"{signal_name(exc)} during the downgrade {now} -> {wanted}; {target} serves "
                    "and is recorded (the downgrade may still finish on the VM)")
        else:
            what = (f"the downgrade {now} -> {wanted} failed; {target} serves on schema "
                    f"{revision or 'unknown'} and is recorded" + (f"\n{output}" if output else ""))
        raise DeployError(
            what,
            "look at the migration's downgrade() and the database (`fab status`), then `fab "
            f"rollback --tag={target} --downgrade` again"
            + (f"; `fab restore --backup={name}` puts back the copy taken before it"
               if name else ""),
            exit_code=exit_code(exc) if interrupted else 1) from None
    return ""


def rollback_host(vm: Vm, tag: str = "", downgrade: bool = False,
                  known_in_registry: Callable[[str], bool] | None = None) -> dict:
    """Roll one host back: the plan of one slot, every phase on one line. Returns the history
    entry."""
    plan, vms = one_slot(vm)
    out = rollback(plan, vms, tag, downgrade=downgrade, known_in_registry=known_in_registry,
                   single=True)
    vm.runner.say(f"rolled back to {out.tag}")
    return out.entries[plan.primary]


def restore(plan: Plan, vms: dict[Slot, Vm], name: str, *, force_unverified: bool = False,
            tag: str = "", single: bool = False) -> list[str]:
    """Restore backup `name` where the database is (the primary host, where deploys back up
    and migrate), in the one order of a restore: lock → check (the backup against its
    manifest, the release on its schema; every other host pulls that release if it runs
    another) → maintenance page (with the proxy) → stop the app on every other host, so that
    none writes to the database being replaced → on the primary: stop, save the live
    database, restore, start, health, record (flows.replace_database) → start every other
    host again (on the primary's release now, recorded when it changed) and check its health.

    Returns what is wrong on the other hosts that are not healthy ('HOST (ROLE): problem').
    When the backup's schema is not the serving release's, the release that runs on it is
    started instead, `tag` if given (deploy/vm/matching.py decides, before anything
    changes)."""
    validate_backup_name(name)
    if tag:
        refuse_moving_tag(refs.validate_tag(tag))
    primary = vms[plan.primary]
    if not primary.runner.dry_run and name not in primary.backups():
        where = "the VM" if single else f"{plan.primary}, where the database is"
        raise DeployError(f"there is no backup {name!r} on {where}", "pick one from `fab backups`")
    current = primary.current_tag()
    view = View(plan, vms, current, single)
    others = {slot: vm for slot, vm in vms.items() if slot != plan.primary}
    before = {slot: vm.current_tag() for slot, vm in others.items()}
    reason = f"fab restore --backup={name}"
    problems: list[str] = []
    with view.release(current), primary.locked(current, action="restore", message=name):
        with view.line(plan.primary, current) as rel:
            rel.note("lock")
            with rel.phase("check"):
                switch.check_switch(primary)  # how the app stops and starts again
                primary.sync_release_env(current)
                manifest = primary.check_backup(name, force_unverified)
                match = restore_match(primary, name, manifest, current, tag)
                primary.start_database(current)
                revision = primary.revision()  # SQLite: asked of the app before it stops
        if others:  # each host has the release's image before any stops
            digest = next((e.get("digest", "") for e in reversed(primary.history())
                           if e.get("tag") == match.tag and e.get("digest")), "")
            for slot, vm in others.items():
                if before[slot] != match.tag:
                    vm.pull_recorded(match.tag, digest)
        stopped: list[Slot] = []
        with contextlib.ExitStack() as pages:
            for vm in others.values():  # behind each host's proxy, the page, not errors
                pages.enter_context(maintenance.window(vm, reason, note=False))
            try:
                for slot, vm in others.items():
                    stop_app(vm, what=f"stopping the app on {slot} failed; nothing was restored")
                    stopped.append(slot)
                if stopped:
                    view.say(f"stopped the app on {', '.join(map(str, stopped))} while the "
                             f"database on {primary.runner.where} is restored")
                # Users get the maintenance page (with the proxy) until the app serves again.
                with view.line(plan.primary, current) as rel, \
                        maintenance.window(primary, reason):
                    saved = replace_database(primary, rel, name, current, revision, match.tag)
            finally:
                # the release on the restored data's schema
                serving = primary.current_tag() if stopped else current
                for slot in stopped:
                    problem = start_again_on(others[slot], name, serving, before[slot])
                    if problem:
                        problems.append(f"{slot}: {problem}")
                    else:
                        view.say(f"{slot}: started again, healthy" + (
                            f", on {serving} (the release on the restored data's schema)"
                            if serving != before[slot] else ""))
    primary.runner.say(f"restored {name}; " + (f"the database it replaced is saved as {saved} "
                                               f"(`fab restore --backup={saved}` undoes this)"
                                               if saved else "there was no database before it"))
    if match.tag != current:
        primary.runner.say(f"{match.tag} serves now, in place of {current}: {match.why}")
    return problems


def start_again_on(vm: Vm, name: str, serving: str, previous: str) -> str:
    """Start a host stopped for the restore of `name` again, on `serving` (the primary's
    release now; recorded there when it is not `previous`) and check its health as a
    restart is checked; what failed ('' if it serves healthy)."""
    if serving == previous:
        started = vm.run(cmd.up(vm.compose()), hide=True, check=False)
        return healthy_after_start(vm) if started.ok else (
            started.output.strip().splitlines() or [f"exit {started.exited}"])[-1]
    try:
        problem = start_release(vm, serving)
    except DeployError as exc:
        problem = exc.message.splitlines()[0]
    if not vm.runner.dry_run:
        with contextlib.suppress(DeployError):
            vm.record_restore(restore_entry(name, serving, vm.revision(), not problem,
                                            previous=previous))
    return problem


def restore_host(vm: Vm, name: str, force_unverified: bool = False, tag: str = "") -> None:
    """Restore backup `name` on one host: the plan of one slot, every phase on one line.

    Nothing changes before the backup is checked (`force_unverified`: one without a manifest,
    if its first bytes are of the right kind). Ctrl-C, SIGTERM or SIGHUP before the data step
    start the app again on the data as it was; during it, the step is finished and recorded
    first. A failed restore command changed nothing (one transaction; SQLite: a rename),
    records nothing and leaves the app stopped, and says so. A `fab` killed meanwhile leaves a
    marker the next command reads (VmQueries.settle_restore). With the proxy, users get the
    maintenance page from before the app stops until it serves again
    (deploy/release/maintenance.py; flows.replace_database)."""
    plan, vms = one_slot(vm)
    restore(plan, vms, name, force_unverified=force_unverified, tag=tag, single=True)
