"""The phases of a release on one host that every plan of hosts shares (check, backup +
migrate, record, prune, a rollback's checks; the sequence that orders them is
deploy/release/sequence.py), and the steps of a restore on the host where the database is.

Each flow holds the deploy lock; anything that cuts it short (an error, Ctrl-C, SIGTERM,
SIGHUP, a lost connection) leaves the recorded release serving and says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal

from deploy.commands import vm as cmd
from deploy.core import refs
from deploy.core.errors import DeployError
from deploy.core.runner import redact
from deploy.core.stamp import stamp
from deploy.release import bluegreen, switch
from deploy.vm import appenvfile, housekeeping
from deploy.vm.contract import refuse_moving_tag
from deploy.vm.matching import Match, matching_release, schemas_of
from deploy.vm.phases import PhaseLine, optional_phase
from deploy.vm.signals import Interrupted, exit_code, sigint_deferred, signal_name
from deploy.vm.steps import Vm
from deploy.vm.vm import is_release

BACKUP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def last_revision(history: list[dict]) -> str:
    return next((e["revision"] for e in reversed(history) if e.get("revision")), "")


def schema_mismatch(history: list[dict], release: str, revision: str) -> str:
    """Why the database's `revision` does not match what `release` runs on ('' if it does or
    either is unknown). A release runs on the schemas its release records name (its deploy
    migrated to one, a rollback to it found one), as a restore decides; a restore is not a
    release record, so data restored from before a migration shows here."""
    ran = schemas_of(history, release)
    if not (release and revision and ran) or revision in ran:
        return ""
    expected = "/".join(ran)
    matching = [e["tag"] for e in history
                if e.get("revision") == revision and e.get("action") == "deploy"]
    return (f"the database is at revision {revision}, but {release} was released on "
            f"{expected}: it may fail on this schema\n"
            f"  fix: `fab deploy --tag={release}` migrates the database to it again"
            + (f"; `fab rollback --tag={matching[-1]}` runs the release deployed on "
               f"{revision}" if matching and matching[-1] != release else ""))


def release_entry(tag: str, digest: str, revision: str, action: str, previous: str,
                  git_sha: str = "", message: str = "", **extra: object) -> dict:
    return {
        "tag": tag,
        "digest": digest,
        "git_sha": git_sha,
        **stamp(),
        "revision": revision,
        "action": action,
        "previous": previous,
        **({"message": message} if message else {}),  # `--message`, checks waived
        **extra,
    }


def record_release(vm: Vm, entry: dict, release: PhaseLine | None = None) -> dict:
    """Record what now serves; a Ctrl-C (or SIGTERM) meanwhile waits until it is recorded.
    The old container a proxy switch retires goes on stopping: the deploy does not wait."""
    with sigint_deferred() as interrupted:
        if not vm.runner.dry_run:  # a dry run records nothing, not even in what it prints
            vm.record(entry)
    if release:
        release.note("recorded")
        if vm.retiring:
            release.note("old container stopping")
    vm.retiring = []
    if interrupted:
        vm.runner.say(f"Ctrl-C came after {entry['tag']} turned healthy: it was recorded all "
                      "the same")
    return entry


def check_contract(vm: Vm, tag: str, config: dict | None = None) -> None:
    """The compose file runs exactly IMAGE:TAG (Vm.check_contract); behind the proxy, no
    host name of another app's is taken over unasked."""
    vm.check_contract(tag, config)
    if vm.settings.proxy and not vm.runner.dry_run:
        bluegreen.check_hosts(vm)


def left_alone(vm: Vm, tag: str) -> bool:
    """Whether a deploy of `tag` leaves this host alone: it serves `tag` healthy already (an
    earlier run that stopped at a later host switched it) on the schema `tag` was released on
    (data restored from before its migration is migrated again, with a warning)."""
    if vm.runner.dry_run or not vm.is_serving(tag):
        return False
    differs = schema_mismatch(vm.history(), tag, vm.revision())
    if differs:
        vm.runner.say(f"warning: {differs.splitlines()[0]}; deploying {tag} again")
    return not differs


def check_release(vm: Vm, rel: PhaseLine, tag: str) -> str:
    """The `check` phase of a deploy of `tag` on one host, before anything changes there: the
    switch's own needs, app.env, the compose project, the compose file rendered with `tag`.
    Returns the release serving now."""
    with rel.phase("check"):
        switch.check_switch(vm)
        vm.gather_facts()  # one round trip; the checks below read what it found
        appenvfile.require_app_env(vm)  # app.env has every key of .env.example
        rel.previous = vm.current_tag()
        vm.check_project()
        # the release files made right, then the compose file rendered with `tag`
        check_contract(vm, tag, vm.sync_release_env(rel.previous, render=tag))
    return rel.previous


@dataclasses.dataclass(frozen=True)
class Migrated:
    """What the `backup` and `migrate` phases did where the database is."""

    backup: str  # its path under backups/ ('' if none)
    before: str  # the revision before the migration ('' if unknown)
    revision: str  # the revision after it ('' if no migration ran or it is unknown)
    history: list[dict]  # the releases recorded before this one

    def recorded(self, revision: str) -> dict:
        """What a release record says of them, the database now at `revision`."""
        return {"backup": self.backup.removeprefix(f"{cmd.BACKUP_DIR}/"),
                "migrated": bool(revision and revision != self.before)}


def backup_and_migrate(vm: Vm, rel: PhaseLine, tag: str, previous: str) -> Migrated:
    """The `backup` and `migrate` phases of a deploy of `tag`, run once, on the host where the
    database is (`previous` serving there)."""
    vm.hold_lock(previous)
    with rel.phase("backup", timed=False) as found:
        records = vm.records()
        history = [e for e in records if is_release(e)]
        vm.wait_for_leftovers()  # a migration left running changes what is backed up
        # What the database says, else the history (a restore since the last release
        # counts). A migration asks the database itself (as the new image reads it) and
        # corrects the backup's manifest: no `alembic current` before it.
        before = ("" if vm.settings.migrate_command else vm.revision()) \
            or last_revision(records)
        backup = vm.backup(tag, previous, revision=before, reason=f"before deploying {tag}")
        found.result = backup or "none"
    vm.hold_lock(previous)
    with rel.phase("migrate") as found:
        revision = vm.migrate(tag, backup)
        before = vm.before_migration or before  # as the new image reads the database
        if revision and revision != before:
            found.result = f"{before or 'empty'}→{revision}"
        elif revision:
            found.result = f"already at {revision}"
    return Migrated(backup, before, revision, history)


def prune_after(vm: Vm, release: PhaseLine | None = None) -> str:
    """After a release that succeeded: the `prune` phase (old images, stopped containers).
    A failure is reported, never the release's: it is recorded and serving. What it did."""
    problem = ""
    with optional_phase(release, "prune", cuts_short=False) as found:
        try:
            found.result = housekeeping.prune(vm)
        except DeployError as exc:
            found.result, problem = "failed", exc.message
    if problem:
        vm.runner.say(f"warning: pruning on {vm.runner.where} failed (the release is recorded "
                      f"and serving): {problem}\n  fix: see the error; `fab prune` tries again")
    return found.result


def check_rollback(vm: Vm, rel: PhaseLine, target: str, current: str) -> None:
    """The `check` phase of a rollback to `target` on one host (`current` serving), before
    anything changes there: the same checks as a deploy's, but of the release going back."""
    with rel.phase("check", cuts_short=False):
        switch.check_switch(vm)
        vm.sync_release_env(current)
        vm.check_project()
        check_contract(vm, target)


def pick_rollback_tag(history: list[dict], current: str, tag: str) -> str:
    """`tag` if given, else the newest release before the current one."""
    if tag:
        return refs.validate_tag(tag)
    for entry in reversed(history):
        if entry["tag"] != current:
            return entry["tag"]
    raise DeployError("there is no earlier release to roll back to", "name one: --tag=T")


def will_downgrade(vm: Vm, target: str, wanted: str, now: str) -> bool:
    """Whether `rollback --downgrade` to `target` (deployed at revision `wanted`, the database
    at `now`) downgrades the schema; refuses, before anything changes, when either revision
    is unknown (a dry run knows neither, and only shows the commands)."""
    if not vm.runner.dry_run and (not wanted or not now):
        unknown = f"the revision {target} was deployed with" if not wanted else \
            "the database's revision"
        raise DeployError(f"cannot downgrade: {unknown} is unknown; nothing was changed",
                          "roll back without --downgrade, or downgrade by hand "
                          f"(`fab exec --cmd \"{vm.alembic} downgrade REV\"`) after a "
                          "backup")
    return bool(wanted and now and wanted != now)


def validate_backup_name(name: str) -> str:
    if not name or not set(name) <= BACKUP_NAME_CHARS or name.startswith("."):
        raise DeployError(f"{name!r} is not a backup name", "pick one from `fab backups`")
    return name


def restore_entry(name: str, tag: str, revision: str, healthy: bool, saved: str = "",
                  **extra: object) -> dict:
    """The history record of a restore: not a release (rollback and retention skip it).
    `saved`: the backup of the database it replaced."""
    return {"kind": "restore", "backup": name, "tag": tag, "revision": revision,
            "healthy": healthy, **({"saved": saved} if saved else {}), **extra, **stamp()}


def record_restore(vm: Vm, entry: dict) -> None:
    """Record a restore and drop its marker; a Ctrl-C meanwhile waits until it is recorded."""
    with sigint_deferred():
        if not vm.runner.dry_run:
            vm.record_restore(entry)
            vm.run(cmd.restore_clear(), quiet=True)


def start_again(vm: Vm, tag: str = "") -> str:
    """Start the app after a restore cut short (`tag`: the release to start, recorded first;
    default the current one); a sentence saying how that went."""
    service = vm.settings.service
    with sigint_deferred():
        if tag and tag != vm.current_tag():
            vm.write_release_files(tag)
        if switch.health_checked_at_start(vm):  # a stack: deployed again at the release
            try:
                last = switch.start_app(vm, vm.current_tag())
            except DeployError as exc:
                last = exc.message
        else:
            # A `compose stop` cut short here goes on on the VM (its channel was closed, not
            # the command): stop it once more, which returns when the container is down, so
            # that the start below is not undone by the stop finishing after it.
            vm.run(cmd.stop(vm.compose(), service), hide=True, check=False)
            result = vm.run(cmd.up(vm.compose()), hide=True, check=False)
            last = "" if result.ok else (result.output.strip().splitlines()
                                         or [f"exit {result.exited}"])[-1]
    if not last:
        return f"{service} was started again"
    return f"{service} could not be started again ({last}); `fab rollback --tag=" \
        f"{vm.current_tag()}` starts it"


def healthy_after_start(vm: Vm) -> str:
    """'' if the app started in place answers as a deploy's switch requires (through Caddy
    with `proxy = true`), else what failed."""
    if vm.settings.proxy:
        return bluegreen.wait_serving(vm)
    return vm.wait_healthy()


def start_release(vm: Vm, tag: str) -> str:
    """After a restore: start release `tag` in place of the stopped one (its release files
    written first, then `compose up`: the app's container recreated on its image under the
    same name, so the proxy's upstream stays right) and check it as a restart is checked
    (through Caddy with `proxy = true`). '' if it serves healthy, else what failed."""
    vm.write_release_files(tag)
    vm.run(cmd.up(vm.compose()), hide=True)
    return healthy_after_start(vm) or vm.runs_pulled_image(tag)


def restore_match(vm: Vm, name: str, manifest: dict, current: str, tag: str = "") -> Match:
    """The release to serve after restoring `name` (matching.matching_release on the VM's
    history); a release other than `current` is pulled now (the image recorded), before
    anything changes, and said."""
    history = vm.history()
    match = matching_release(history, manifest, name, current, tag)
    if match.tag == current:
        return match
    refuse_moving_tag(match.tag)
    recorded: dict = next((e for e in reversed(history)
                           if e.get("tag") == match.tag and e.get("digest")), {})
    digest = recorded.get("digest", "")
    try:  # on the VM already, as recorded: no pull
        there = bool(digest) and vm.inspect(match.tag) == digest
    except DeployError:  # not on the VM
        there = False
    if not there:
        vm.pull_recorded(match.tag, digest)
    check_contract(vm, match.tag)
    vm.runner.say(f"the backup {name} holds schema {manifest.get('revision')}, which "
                  f"{current} does not run on: {match.tag} is put back with it ({match.why})")
    return match


def as_interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


def replace_database(vm: Vm, rel: PhaseLine, name: str, current: str, revision: str,
                     target: str = "") -> str:
    """The steps of a restore that change the VM, under its lock: stop the app, save the live
    database, make it equal the backup `name`, record it, start the app (release `target`
    when its schema is the backup's and `current`'s is not), check its health.
    Returns the name of the saved backup ('' when there was no database)."""
    s = vm.settings
    target = target or current
    moved = {"previous": current} if target != current else {}
    try:
        with rel.phase("stop", cuts_short=False):
            switch.stop_app(vm)
        with rel.phase("save", cuts_short=False, timed=False) as found:
            saved = vm.backup(current, revision=revision, label="-pre-restore",
                              reason=f"the database `fab restore --backup={name}` replaced")
            found.result = saved or "no database yet"
    except (KeyboardInterrupt, DeployError) as exc:
        what, fix, code = (exc.message, exc.fix, 1) if isinstance(exc, DeployError) else (
            signal_name(exc), f"run `fab restore --backup={name}` again", exit_code(exc))
        raise DeployError(
            f"{what}\nthe restore of {name} stopped before the database changed: it is as "
            f"it was; {start_again(vm)}", fix, exit_code=code) from None
    saved = saved.removeprefix(f"{cmd.BACKUP_DIR}/")
    undo = f"`fab restore --backup={saved}` puts back the database it replaced" if saved \
        else "there was no database to save before it"
    stopped = (f"{s.service} is left stopped, the database as the failed restore left it",
               f"fix what the error says and run `fab restore --backup={name}` again; "
               f"`fab rollback --tag={current}` starts the app as it is"
               + (f"; the database before it is saved as {saved}" if saved else ""))
    # The data step runs to its end whatever signal comes; the marker (written first)
    # tells the next command what a SIGKILL left.
    with sigint_deferred() as caught, rel.phase("restore", cuts_short=False) as found:
        found.result = name
        if not vm.runner.dry_run:
            vm.write(cmd.RESTORE_MARKER, json.dumps(
                {"backup": name, "saved": saved, "tag": target, **moved, **stamp()}))
        if s.database == "sqlite":
            argv = cmd.restore_sqlite(name, s.sqlite_path)
        else:
            argv = cmd.restore_postgres(vm.compose(), s.postgres_service, s.postgres_user,
                                        s.postgres_db, name)
        result = vm.run(argv, hide=True, check=False)
        if not result.ok:
            vm.run(cmd.restore_clear(), quiet=True, check=False)
            tail = "\n".join(result.output.splitlines()[-15:])
            raise DeployError(redact(f"restoring {name} failed; {stopped[0]}\n{tail}",
                                     vm.runner.secrets), stopped[1])
    # From here the database equals the backup: the history says so, whatever comes next.
    if caught:
        signalled = as_interrupt(caught[0])
        record_restore(vm, restore_entry(name, target, vm.revision(), False, saved,
                                         cut_short=True, **moved))
        raise DeployError(
            f"{signal_name(signalled)} during the restore of {name}: it was finished and "
            f"recorded; {start_again(vm, target)} (its health was not checked)",
            f"`fab status` shows it; {undo}", exit_code=exit_code(signalled))
    try:
        with rel.phase("start", cuts_short=False) as found:
            if target != current:  # the release whose schema is the backup's
                found.result = target
                vm.write_release_files(target)
            problem = switch.start_app(vm, target)
        if not switch.health_checked_at_start(vm):
            with rel.phase("healthy", cuts_short=False):
                problem = healthy_after_start(vm) or (
                    vm.runs_pulled_image(target) if target != current else "")
    except BaseException as exc:  # the first error is the one to show; the record a bonus
        with contextlib.suppress(Exception):
            record_restore(vm, restore_entry(name, target, vm.revision(), False, saved,
                                             **moved))
        if isinstance(exc, KeyboardInterrupt):
            raise DeployError(
                f"{signal_name(exc)} after {name} was restored (recorded), while {s.service}"
                " was starting: it may not be running", f"`fab status` shows it; `fab "
                f"rollback --tag={target}` starts it; {undo}",
                exit_code=exit_code(exc)) from None
        raise
    record_restore(vm, restore_entry(name, target, vm.revision(), not problem, saved,
                                     **moved))
    if problem:
        raise DeployError(f"after the restore the app is not healthy ({problem})"
                          + (f"; {target} was started, not {current}" if moved else ""),
                          f"look at `fab logs`; {undo}")
    return saved
