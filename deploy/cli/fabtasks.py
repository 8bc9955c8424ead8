"""Fabric tasks (`fab ...`): thin wiring of `deploy.vm` for each VM.

The VM comes from the settings, so `fab rollback --tag=v1` needs no `-H`; `-H` overrides. With
several hosts the steps run host after host and stop at the first failure. An app repo adopts
these with a one-line fabfile/__init__.py: `from deploy.cli.fabtasks import ns`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric import task
from invoke import Collection, Context, Exit

from deploy.cli.fabconsole import alias_, alias_tasks, exec_, shell
from deploy.cli.fabenv import env_, env_keys
from deploy.cli.fabhosts import each_vm, last_of, release_kind_of, with_roles
from deploy.cli.taskhelp import help_instead
from deploy.core.errors import friendly
from deploy.core.runner import set_verbose, sh
from deploy.core.settings import load_settings
from deploy.release.target import switch_kind

if TYPE_CHECKING:  # each task imports what it runs when it runs: `fab --list` stays fast
    from deploy.vm.steps import Vm


@task(help={"tag": "the image tag to deploy (must be in the registry)",
            "message": "a note kept in the lock and history", "dry-run": "print, run nothing",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def deploy(c: Context, tag: str, message: str = "", dry_run: bool = False,
           verbose: bool = False) -> None:
    """Deploy TAG: lock, pull, backup, migrate, up, health check, record the release."""
    help_instead("deploy", tag)
    from deploy.core import refs, registry
    from deploy.core.runner import set_verbose
    from deploy.core.settings import load_settings
    from deploy.vm.contract import refuse_moving_tag

    set_verbose(verbose, c)

    settings = load_settings()
    refuse_moving_tag(refs.validate_tag(tag))
    if not dry_run:
        registry.require_tag(refs.validate_image(settings.require("image")), tag,
                             settings.registry_user, settings.registry_password)
    from deploy.cli.fabrelease import deploy_tag

    deploy_tag(c, settings, tag, message=message, dry_run=dry_run)  # roles, swarm, hooks


@task(help={"from": "the destination whose healthy release to deploy here (e.g. staging)",
            "message": "a note kept in the lock and history", "dry-run": "print, run nothing",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def promote(c: Context, from_: str = "", message: str = "", dry_run: bool = False,
            verbose: bool = False) -> None:
    """Deploy here the image digest another destination (--from) serves healthy.

    This destination is DEPLOY_DESTINATION's (else the base settings); no build, no push;
    refused, with nothing deployed, when --from does not serve it healthy."""
    from deploy.cli.fabpromote import promote as promote_release

    set_verbose(verbose, c)
    promote_release(c, load_settings(), from_, message=message, dry_run=dry_run)


@task(help={"tag": "the release to put back (default: the previous one)",
            "downgrade": "back up, switch to that release, then `alembic downgrade` to its "
                         "revision (with the current image)",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def rollback(c: Context, tag: str = "", downgrade: bool = False, dry_run: bool = False,
             verbose: bool = False) -> None:
    """Put an earlier release back (health-checked, under the deploy lock)."""
    from deploy.cli.fabrelease import after_rollback
    from deploy.core import refs, registry
    from deploy.core.errors import DeployError
    from deploy.core.runner import set_verbose
    from deploy.core.settings import load_settings
    from deploy.release import sequence
    from deploy.vm.contract import refuse_moving_tag

    set_verbose(verbose, c)

    settings = load_settings()
    if tag:
        refuse_moving_tag(refs.validate_tag(tag))
        image = refs.validate_image(settings.require("image"))
        # Before any connection: a tag that is not in the registry cannot be pulled back.
        if not dry_run and registry.tag_digest(image, tag, settings.registry_user,
                                               settings.registry_password) is None:
            raise DeployError(f"{image}:{tag} is not in the registry: there is no such release "
                              "to roll back to", "pick a tag from `fab releases`")
    kind = release_kind_of(c, settings)
    if kind == "roles":  # every role's hosts, in batches, under one lock
        from deploy.release import roles

        def in_registry(t: str) -> bool:
            return registry.tag_digest(settings.image, t, settings.registry_user,
                                       settings.registry_password) is not None
        roles.rollback(settings, tag, downgrade=downgrade, dry_run=dry_run,
                       known_in_registry=in_registry)
        after_rollback(c, settings, [], dry_run)
        return
    entries = []
    for vm in each_vm(c, dry_run):
        def in_vm_registry(t: str, vm: Vm = vm) -> bool:
            s = vm.settings
            return registry.tag_digest(vm.image, t, s.registry_user, s.registry_password) \
                is not None
        entries.append(sequence.rollback_host(vm, tag, downgrade=downgrade,
                                              known_in_registry=in_vm_registry))
    after_rollback(c, settings, entries, dry_run)


@task
@friendly
def releases(c: Context) -> None:
    """The release history on the VM, the current release marked with *, and the restores
    between releases (`restore`: the backup put back, the tag serving, the revision after)."""
    from deploy.vm.vm import is_release

    for vm in each_vm(c):
        current = vm.current_tag()
        records = vm.records()
        history = [e for e in records if is_release(e)]
        print(f"{vm.runner.where}:" if records else f"{vm.runner.where}: no releases recorded yet")
        for entry in records:
            mark = "*" if entry is last_of(history, current) else " "
            if entry.get("kind") == "hook":  # a hook that failed after the release above
                print(f"  {entry.get('time', '?')}  {entry['tag']:<24} {'hook':<8} "
                      f"{entry.get('message', '')}")
                continue
            if not is_release(entry):
                print(f"  {entry.get('time', '?')}  {entry['tag']:<24} {'restore':<8} "
                      f"rev={entry.get('revision') or '-':<8} by {entry.get('who', '?')} "
                      f"backup {entry.get('backup', '?')}"
                      + ("  (cut short before its health check)"
                         if entry.get("cut_short") or entry.get("cut_off") else
                         "" if entry.get("healthy", True) else "  (the app did not turn "
                         "healthy after it)"))
                continue
            print(f"{mark} {entry['time']}  {entry['tag']:<24} {entry.get('action', ''):<8} "
                  f"rev={entry.get('revision') or '-':<8} by {entry.get('who', '?')} "
                  f"{(entry.get('digest') or '')[:19]}"
                  + (f"  ({entry['message']})" if entry.get("message") else ""))


@task
@friendly
def status(c: Context) -> None:
    """What runs on the VM: current tag, containers, health, Alembic revision, lock holder."""
    from deploy.commands import vm as cmd
    from deploy.vm.deploylock import describe_holder, lease_is_fresh
    from deploy.vm.flows import schema_mismatch

    for vm in each_vm(c):
        holder = vm.holder()
        print(f"host:      {vm.runner.where}")
        release = vm.current_tag()
        print(f"release:   {release or '(none recorded)'}")
        running = vm.running_tag()
        recorded = last_of(vm.history(), release) or {} if release else {}
        mismatch = vm.runs_pulled_image(release, recorded.get("digest", "")) \
            if release and running == release else ""
        if release and running and running != release:  # e.g. a deploy killed mid-switch
            print(f"warning: the app container runs {running}, not the recorded release")
            print(f"  fix: `fab deploy --tag={running}` records it, or `fab rollback "
                  f"--tag={release}` puts {release} back")
        if mismatch:
            print(f"warning: {mismatch}")
        vm.settle_restore(lock_alive=holder is not None
                          and lease_is_fresh(holder, vm.settings.lock_lease))
        if switch_kind(vm.settings) != "swarm":  # a stack's health: its tasks, below
            print(f"health:    {vm.health()}")
        oneoffs = vm.run(cmd.oneoff_containers(vm.project), quiet=True, check=False).stdout
        revision = vm.revision()
        print(f"revision:  {revision or '-'}" + (
            f"  (a migration is running in {', '.join(oneoffs.split())}: one-off container(s) "
            "of this app)" if oneoffs.split() else ""))
        differs = "" if oneoffs.split() else schema_mismatch(vm.history(), release, revision)
        if differs:
            print(f"warning: {differs}")
        print(f"lock:      {describe_holder(holder) if holder else 'free'}")
        if switch_kind(vm.settings) == "swarm":  # the stack's tasks, not compose's
            from deploy.release import swarm
            print("\n".join(swarm.status_lines(vm)))
            continue
        ps = vm.run(cmd.ps(vm.compose()), quiet=True, check=False)
        print(ps.stdout.rstrip())
        if vm.settings.proxy:
            from deploy.release import bluegreen, maintenance

            print("\n".join(bluegreen.status_lines(vm)))
            print(maintenance.status_line(vm))
        if not ps.ok:  # e.g. a garbled .env: every compose command fails the same way
            # compose's error, not a warning before it (`level=warning msg="The X variable
            # is not set"`, when the deleted .env held X)
            lines = ps.stderr.strip().splitlines()
            errors = [line for line in lines if "level=warning" not in line]
            problem = (errors or lines or [f"exit {ps.exited}"])[0]
            print(f"warning: docker compose cannot read the app: {problem}")
            print(f"  fix: repair what it names; `fab setup` rewrites {vm.settings.app_dir}/"
                  f"{cmd.COMPOSE_ENV} from {cmd.APP_ENV} and the current release")
        print(f"project:   {vm.project}")


@task(help={"follow": "keep streaming", "tail": "how many lines to show"})
@friendly
def logs(c: Context, follow: bool = False, tail: int = 100) -> None:
    """The app service's logs."""
    from deploy.commands import vm as cmd

    for vm in each_vm(c):
        if switch_kind(vm.settings) == "swarm":
            from deploy.release import swarm

            swarm.logs(vm, int(tail), follow)
            continue
        # Not quiet: quiet also hides the output, and the logs are the output.
        vm.run(cmd.service_logs(vm.compose(), vm.settings.service, int(tail), follow),
               check=False)


@task(name="run", help={"cmd": "the shell command to run on the VM, in app_dir"})
@friendly
def run_(c: Context, cmd: str) -> None:
    """Run an ad-hoc shell command on the VM (host key verified); its exit code is ours.

    Fabric's own `fab -H vm -- cmd` works too, but Fabric alone does not verify host keys.
    """
    help_instead("run", cmd)
    for vm in each_vm(c):
        result = vm.run(sh(cmd), check=False)
        if not result.ok:
            raise Exit(f"command exited {result.exited}", code=result.exited)


@task(help={"verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)",
            "take-host": "with proxy: move proxy_host names another app serves to this one"})
@friendly
def setup(c: Context, dry_run: bool = False, verbose: bool = False,
          take_host: bool = False) -> None:
    """Prepare the VM: app directory, compose file, the app's env as app.env (0600), registry
    login; refuses a compose file the deploys could not back up or switch; with `proxy` on,
    the VM's Caddy too. A proxy_host another app on the VM serves is refused unless
    --take-host (that app then no longer answers to it)."""
    set_verbose(verbose, c)
    from deploy.commands import docker
    from deploy.commands import vm as cmd
    from deploy.core import refs
    from deploy.core.settings import load_settings
    from deploy.local.checks.envcomplete import read_compose, require_service
    from deploy.vm.appenvfile import values_for_app_env

    settings = load_settings()  # before any connection: what would be uploaded must be sound
    refs.validate_image(settings.require("image"))
    read_compose(settings.path(settings.compose_file))
    if not with_roles(c):  # (a role may name its own service and compose file)
        require_service(settings)
    from deploy.release import dbplace

    dbplace.check(settings, use_roles=with_roles(c))  # one database, where the settings say
    values = values_for_app_env(settings.path(settings.env_file))  # without DEPLOY_* keys
    from deploy.cli.fabrelease import local_runner
    from deploy.local import secrets

    found = secrets.resolve(settings, local_runner(settings, dry_run))  # [secrets] commands
    values.update(found)
    if settings.proxy:
        from deploy.release import bluegreen, proxyform

        bluegreen.hosts(settings)
        proxyform.check_compose(settings)
    for vm in each_vm(c, dry_run):
        s = vm.settings
        if s.proxy and not take_host:  # before anything changes on the VM
            bluegreen.check_hosts(vm)
        vm.runner.secrets.extend(found.values())
        vm.ensure_helper()
        if s.proxy:  # the proxy's form of the compose file: what this VM's compose can read
            proxyform.override_text(s, vm.compose_kind())
        vm.upload(s.path(s.compose_file), s.compose_file, 0o644)
        changed, kept = vm.merge_app_env(values)
        if changed:
            vm.runner.say(f"{cmd.APP_ENV}: updated from {s.env_file}: {', '.join(changed)} "
                          "(the VM had other values)")
        if kept:
            vm.runner.say(f"{cmd.APP_ENV}: kept {', '.join(kept)} (only on the VM, not in "
                          f"{s.env_file})")
        vm.write_release_files(vm.current_tag())
        vm.check_project()
        current = vm.current_tag()
        if not dry_run and switch_kind(s) != "swarm":
            vm.check_sqlite_on_disk(vm.config(current))
        if switch_kind(s) == "swarm":  # a one-node swarm unless the engine is in one
            from deploy.release import swarm
            swarm.ensure_swarm(vm)
            swarm.join_workers(vm)
        if s.registry_user and s.registry_password:
            vm.run(docker.login(docker.registry_of(s.image), s.registry_user),
                   stdin=s.registry_password, hide=True, what="registry login on the VM failed",
                   fix="check registry_user and DEPLOY_REGISTRY_PASSWORD")
        if s.proxy:
            bluegreen.setup(vm, take_host)
        vm.runner.say(f"ready: {s.app_dir}" + (f" behind the proxy in {s.proxy_dir}"
                                                if s.proxy else ""))


@task(name="env-sync",
      help={"verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def env_sync(c: Context, verbose: bool = False) -> None:
    """Set the [secrets] commands' values in the VM's app.env (run on the laptop).

    Each value is sent on stdin and never printed; it takes effect at the next deploy."""
    from deploy.cli.fabrelease import local_runner
    from deploy.commands import vm as cmd
    from deploy.core.errors import DeployError
    from deploy.local import secrets
    from deploy.vm import appenvfile

    set_verbose(verbose, c)
    settings = load_settings()
    values = secrets.resolve(settings, local_runner(settings))
    if not values:
        raise DeployError("there are no [secrets] in deploy.toml to sync",
                          'add a [secrets] table: APP_SECRET = "pass show app/secret"')
    for vm in each_vm(c):
        appenvfile.set_values(vm, values)
        vm.runner.say(f"{', '.join(values)} set in {vm.settings.app_dir}/{cmd.APP_ENV}; they "
                      "take effect at the next deploy")


@task(help={"force": "clear it even though its holder renewed it recently (may be alive); "
                     "asks first",
            "yes": "with --force: do not ask (for scripts)"})
@friendly
def unlock(c: Context, force: bool = False, yes: bool = False) -> None:
    """Clear a stale deploy lock (left by a deploy that was killed); a lock whose lease a live
    deploy renews is refused without --force, which asks first (--yes: no question). Who
    cleared it goes to the VM's lock log: the next deploy shows it, and the live deploy stops
    at its next step instead of running on beside another."""
    import json

    from deploy.commands import vm as cmd
    from deploy.core.errors import DeployError
    from deploy.core.stamp import stamp
    from deploy.vm.deploylock import describe_holder, lease_is_fresh

    for vm in each_vm(c):
        holder = vm.holder()
        if not holder:
            print(f"{vm.runner.where}: the lock is free")
            continue
        fresh = lease_is_fresh(holder, vm.settings.lock_lease)
        if fresh and not force:
            raise DeployError(
                f"the lock on {vm.runner.where} is held by a deploy that is alive: "
                f"{describe_holder(holder)}",
                "wait for it; if you are sure it is gone, `fab unlock --force`")
        if fresh and not yes:
            confirm_break(vm.runner.where, describe_holder(holder))
        vm.run(cmd.break_lock(json.dumps({**stamp(), "forced": fresh, "broke": holder},
                                         sort_keys=True)))
        print(f"{vm.runner.where}: cleared the lock held by {describe_holder(holder)}")
        vm.settle_restore()


def confirm_break(where: str, holder: str) -> None:
    """Ask on the terminal before breaking a lock a live deploy may hold; refuse without one."""
    import sys

    from deploy.core.errors import DeployError

    if not sys.stdin.isatty():
        raise DeployError(f"`fab unlock --force` asks before it breaks the lock on {where} "
                          f"(held by {holder}), and there is no terminal to ask on; the lock "
                          "is left as it was", "run it in a terminal, or add --yes (scripts)")
    answer = input(f"The lock on {where} is held by {holder}: a deploy that may be alive. "
                   "Breaking it stops that deploy at its next step. Break it? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise DeployError(f"not confirmed; the lock on {where} is left as it was",
                          "wait for the deploy to finish, or answer y")


@task(help={"dry-run": "print, run nothing",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def prune(c: Context, dry_run: bool = False, verbose: bool = False) -> None:
    """Remove the app's stopped containers and the images of releases older than the newest
    keep_releases (as every deploy does once it succeeded), under the deploy lock. Images no
    release of this app recorded, and images a container uses, stay."""
    from deploy.vm import housekeeping

    set_verbose(verbose, c)
    for vm in each_vm(c, dry_run):
        with vm.locked(vm.current_tag() or "the app", action="prune"):
            said = housekeeping.prune(vm)
        if not dry_run:
            print(f"{vm.runner.where}: pruned {said} (keep_releases = "
                  f"{vm.settings.keep_releases})")


@task(help={"data": "also the database: its volumes, the SQLite file and backups/",
            "yes": "do not ask (for scripts)", "dry-run": "print, run nothing",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def remove(c: Context, data: bool = False, yes: bool = False, dry_run: bool = False,
           verbose: bool = False) -> None:
    """Remove the app from the VM: its containers, networks, proxy route, images and the
    files in app_dir. The database (volumes, the SQLite file) and backups/ stay unless
    --data. Asks first (--yes: no question); refused while a deploy holds the lock."""
    from deploy.core.errors import DeployError
    from deploy.vm import housekeeping
    from deploy.vm.deploylock import describe_holder

    set_verbose(verbose, c)
    for vm in each_vm(c, dry_run):
        holder = vm.holder()
        if holder:
            raise DeployError(f"the VM is locked by another deploy: {describe_holder(holder)}; "
                              "nothing was removed",
                              "wait for it to finish; if it died, clear it with `fab unlock`")
        if not yes and not dry_run:
            confirm_remove(vm, data)
        lines = housekeeping.remove(vm, data)
        for line in lines:
            kept = line.startswith("kept ")
            print(f"  {'kept' if kept else 'removed'}: {line.removeprefix('kept ')}")
        if not dry_run:
            print(f"{vm.runner.where}: removed the app {vm.project} from {vm.settings.app_dir}"
                  + ("" if data else "; its database and backups stay (`fab remove --data` "
                     "removes them)"))


def confirm_remove(vm: Vm, data: bool) -> None:
    """Ask on the terminal before removing the app; refuse without one."""
    import sys

    from deploy.core.errors import DeployError

    s = vm.settings
    what = (f"the app {vm.project} from {vm.runner.where}: its containers, proxy route, images "
            f"and files in {s.app_dir}" + (", its database volumes and backups" if data else
                                           " (the database and backups/ stay)"))
    if not sys.stdin.isatty():
        raise DeployError(f"`fab remove` asks before it removes {what}, and there is no "
                          "terminal to ask on; nothing was removed",
                          "run it in a terminal, or add --yes (scripts)")
    answer = input(f"Remove {what}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise DeployError("not confirmed; nothing was removed", "answer y to remove it")


@task
@friendly
def backups(c: Context) -> None:
    """The database backups on the VM, newest first, each with the schema (Alembic revision)
    it holds and the release it was taken before (from its manifest: `fab restore` takes back
    only what these say)."""

    from deploy.vm.vm import describe_backup

    for vm in each_vm(c):
        found = vm.backup_manifests()
        print("\n".join(describe_backup(name, made) for name, made in found) if found
              else f"{vm.runner.where}: no backups yet")


@task(help={"backup": "a name from `fab backups`",
            "force-unverified": "restore a backup that has no manifest (made by a version "
                                "before manifests), if its first bytes are of the right kind",
            "tag": "the release to serve after it when the backup's schema is not the serving "
                   "release's: a recorded release on the backup's schema (default: the one "
                   "the backup's manifest and the history name)",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def restore(c: Context, backup: str, force_unverified: bool = False, tag: str = "",
            verbose: bool = False) -> None:
    """Restore a database backup this tool made for this app (checked against its manifest);
    the live database is saved as a backup first, the app stopped meanwhile, then
    health-checked. A backup on another schema than the serving release's (taken before a
    migration) brings back the release that runs on it."""
    help_instead("restore", backup)
    from deploy.core.runner import set_verbose
    from deploy.release import sequence

    set_verbose(verbose, c)
    if with_roles(c):  # where the database is, the other hosts stopped meanwhile
        from deploy.release import roles

        roles.restore(load_settings(), backup, force_unverified=force_unverified, tag=tag)
        return
    for vm in each_vm(c):
        sequence.restore_host(vm, backup, force_unverified=force_unverified, tag=tag)


MAINTENANCE_ACTIONS = ("on", "off")


@task(name="maintenance", positional=["action"],
      help={"action": "on: the app's hosts answer 503 with the maintenance page; off: the "
                      "app again"})
def maintenance_(c: Context, action: str) -> None:
    """Maintenance mode behind the proxy: `on` makes Caddy answer the app's host names with
    a 503 page (maintenance_page, else the toolkit's) and Retry-After
    (maintenance_retry_after); `off` sends them to the app again. No config load, no
    dropped request; `fab status` shows it."""
    help_instead("maintenance", action)
    maintenance_action(c, action)  # (Invoke loses positional arguments through a wrapper)


@friendly
def maintenance_action(c: Context, action: str) -> None:
    from deploy.core.errors import DeployError
    from deploy.release import bluegreen, maintenance

    if action not in MAINTENANCE_ACTIONS:
        raise DeployError(f"unknown maintenance action {action!r}",
                          "use fab maintenance on | fab maintenance off")
    settings = load_settings()
    maintenance.require_proxy(settings)
    text = maintenance.page(settings) if action == "on" else ""  # checked before connecting
    for vm in each_vm(c):
        if action == "on":
            maintenance.turn_on(vm, "fab maintenance on", text)
            vm.runner.say(f"maintenance mode on: {', '.join(bluegreen.hosts(vm.settings))} answer "
                          f"503 (Retry-After {vm.settings.maintenance_retry_after}s)")
        else:
            was = vm.maintenance_state()
            maintenance.turn_off(vm)
            vm.runner.say("maintenance mode off: requests go to the app" if was is not None
                          else "maintenance mode was off: requests go to the app")


PROXY_ACTIONS = ("status", "logs", "reload")


@task(name="proxy", help={"action": "status, logs or reload", "follow": "logs: keep streaming",
                          "tail": "logs: how many lines"})
@friendly
def proxy_(c: Context, action: str, follow: bool = False, tail: int = 100) -> None:
    """The VM's proxy (Caddy): `status` (routes, upstream health), `logs`, or `reload` (load
    its config again: no restart, open connections carry on)."""
    help_instead("proxy", action)
    from deploy.commands import proxy as pcmd
    from deploy.core.errors import DeployError
    from deploy.release import bluegreen

    if action not in PROXY_ACTIONS:
        raise DeployError(f"unknown proxy action {action!r}",
                          f"use one of: fab proxy {' | '.join(PROXY_ACTIONS)}")
    for vm in each_vm(c):
        if action == "status":
            print("\n".join(bluegreen.status_lines(vm)))
            routes = vm.run(pcmd.admin_get(vm.settings.proxy_dir, "/reverse_proxy/upstreams"),
                            quiet=True, check=False)
            print(f"upstreams (Caddy): {routes.stdout.strip() or routes.stderr.strip()}")
        elif action == "logs":
            vm.run([*bluegreen.caddy_compose(vm), "logs", "--no-color", "--tail", str(int(tail)),
                    *(["--follow"] if follow else [])], cwd="", check=False)
        else:
            bluegreen.reload(vm)
            vm.runner.say("reloaded the proxy's config (no restart)")


ns = Collection(
    deploy, rollback, releases, status, logs, exec_, run_, setup, unlock, backups, restore, env_,
    env_keys, proxy_, env_sync, promote, prune, remove, maintenance_, shell, alias_,
)
for _alias in alias_tasks(frozenset(ns.task_names)):  # deploy.toml's [aliases]: `fab console`
    ns.add_task(_alias)
