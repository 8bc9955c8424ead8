"""The app on one VM: each method is one query or one step, built from `deploy.commands.vm`
and run through the Runner (so a dry run prints them all and connects nowhere)."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Unpack

from deploy.commands import docker
from deploy.commands import proxy as pcmd
from deploy.commands import vm as cmd
from deploy.core import refs
from deploy.core.errors import DeployError
from deploy.core.runner import Result, Runner, RunOptions, redact
from deploy.core.settings import Settings
from deploy.core.settingsrules import vm_directory_problem
from deploy.release import proxyform
from deploy.vm import contract
from deploy.vm.deploylock import LeaseRenewer, describe_holder, parse_holder
from deploy.vm.facts import MARK, OUTPUT, Facts, parse_facts, parse_release_files
from deploy.vm.signals import sigint_deferred

REVISION_RE = re.compile(r"^(\w+)(?: \((?:effective )?head\))*\s*$")
POLL = 0.2


class VmQueries:
    """The app on one VM: connection-level basics, the lock, the release files, queries.
    The steps of a release build on it (deploy.vm.steps.Vm)."""

    def __init__(self, settings: Settings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self._compose_kind = ""
        self._helpers: set[str] = set()  # directories whose helper copy is in place
        self._current: str | None = None
        self.pulled: dict[str, str] = {}  # tag -> image id pulled for it
        self.serving = ""  # the container a proxy switch left serving (recorded)
        self.holder_json = ""  # this deploy's lock record while it holds the lock
        self.manifests: dict[str, dict] = {}  # backups/NAME -> the manifest written for it
        self.before_migration = ""  # the revision the last migration found ('' if unknown)
        self.facts: Facts | None = None  # what the check phase read (gather_facts)
        self.rendered: dict[str, dict] = {}  # tag -> the compose file as compose rendered it
        self._proxy_form_written = ""  # .deploy/proxy.yaml as this connection wrote it
        self.leftovers_settled = False  # no one-off container of the project runs (we waited)
        self.retiring: list[str] = []  # old containers a switch stops in the background
        self.seen_running: tuple[str, str] | None = None  # (image id, reference) the last
        # health poll saw the service's container run
        # app_images' answer before this command's pull (check_pull_space read it), which
        # the prune after it may read instead of asking again; None: not known
        self.images_before_pull: str | None = None

    # -- basics -------------------------------------------------------------------------
    @property
    def image(self) -> str:
        return refs.validate_image(self.settings.require("image"))

    def ref(self, tag: str) -> str:
        return f"{self.image}:{refs.validate_tag(tag)}"

    @property
    def project(self) -> str:
        """The compose project: project_name, else app_dir's name plus a hash of its path."""
        return self.settings.project_name or cmd.project_name(self.settings.app_dir)

    def release_vars(self, tag: str) -> dict[str, str]:
        s = self.settings
        return {s.image_variable: self.image, s.tag_variable: tag}

    @property
    def alembic(self) -> str:
        """`alembic` as the migrate command starts it (`poetry run alembic`, a venv's)."""
        return cmd.alembic_command(self.settings.migrate_command)

    def compose_kind(self) -> str:
        if self._compose_kind:
            return self._compose_kind
        wanted = self.settings.compose_command
        if self.facts and self.facts.compose and wanted == "auto":
            if self.facts.compose == "none":
                raise DeployError("neither `docker compose` nor `docker-compose` works on the VM",
                                  "install Docker Compose on the VM")
            self._compose_kind = self.facts.compose
        elif wanted != "auto" or self.runner.dry_run:
            self._compose_kind = "v2" if wanted == "auto" else wanted
        else:
            result = self.run(cmd.detect_compose(), check=False, quiet=True)
            if not result.ok:
                raise DeployError("neither `docker compose` nor `docker-compose` works on the VM",
                                  "install Docker Compose on the VM")
            self._compose_kind = result.stdout.strip()
        return self._compose_kind

    def gather_facts(self) -> Facts:
        """Ask the VM, in one round trip, what the checks of a release need (the keys of
        app.env, the recorded release, the compose flavour, the projects and directories,
        one-off containers, the HTTP tool, the history); kept for the rest of this command."""
        kind = self._compose_kind or self.settings.compose_command
        result = self.run(cmd.facts(self.settings.tag_variable, self.project,
                                    self.settings.app_dir, kind, self.image), quiet=True,
                          what="the VM could not answer the deploy's checks",
                          fix="see the error above")
        self.facts = Facts() if self.runner.dry_run else parse_facts(result.stdout)
        return self.facts

    def compose(self, tag: str | None = None) -> list[str]:
        """The compose command with release `tag` (default: the current one) interpolated."""
        tag = self.current_tag() if tag is None else tag
        base = cmd.compose(self.compose_kind(), self.settings.compose_file, self.project,
                           self.overrides)
        return cmd.with_release(self.release_vars(tag), base)

    @property
    def overrides(self) -> list[str]:
        """The compose files the tool merges over compose_file: the proxy's form of it."""
        return [cmd.PROXY_OVERRIDE] if self.settings.proxy else []

    def run(self, argv: list[str], **kwargs: Unpack[RunOptions]) -> Result:
        directory = cmd.helper_dir(argv)
        if directory is not None:
            self.ensure_helper(directory)
        return self.runner.run(argv, **kwargs)

    def ensure_helper(self, directory: str = "") -> None:
        """Put the helper script in place in app_dir (or `directory`, e.g. proxy_dir): once
        per connection, a no-op if it is there; makes the directory on a fresh VM."""
        directory = directory or self.settings.app_dir
        if directory in self._helpers:
            return
        self._helpers.add(directory)
        extra = [cmd.BACKUP_DIR] if directory == self.settings.app_dir else []
        result = self.runner.run(cmd.install_helper(directory, *extra),
                                 stdin=cmd.HELPER_TEXT.rstrip("\n"), quiet=True, cwd="",
                                 check=False)
        if result.exited == cmd.RESOLVED_ELSEWHERE_EXIT:
            self._helpers.discard(directory)
            key = "app_dir" if directory == self.settings.app_dir else "proxy_dir"
            resolved = result.stdout.strip().removeprefix("resolved ")
            problem = vm_directory_problem(resolved)
            raise DeployError(
                f"{key} {directory} is {resolved} on the VM (a symbolic link on the way): "
                f"another name for that directory{'; ' + problem if problem else ''}; "
                "nothing was written",
                f"give {key} a directory of this app's own; if it is {resolved}, set "
                f'{key} = "{resolved}"')
        if not result.ok:
            raise DeployError(f"could not write the deploy helper into {directory}\n"
                              f"{result.output[-500:]}",
                              f"check that the SSH user may write {directory} on the VM")

    def upload(self, local: Path, remote_name: str, mode: int) -> None:
        """Upload a file over SFTP: mode set before any byte is written, then renamed in."""
        if not local.is_file():
            raise DeployError(f"{local} does not exist", f"create it (see {local.name}.example)")
        self.upload_text(local.read_bytes(), remote_name, mode, str(local))

    def upload_text(self, data: bytes, remote_name: str, mode: int, label: str) -> None:
        remote = f"{self.settings.app_dir}/{remote_name}"
        self.runner.say(f"upload {label} -> {remote} (mode {mode:o})")
        if self.runner.dry_run:
            return
        sftp = self.runner.target.connection.sftp()
        partial = f"{remote}.upload"
        with sftp.open(partial, "w") as handle:
            sftp.chmod(partial, mode)
            handle.write(data)
        sftp.posix_rename(partial, remote)

    # -- lock ---------------------------------------------------------------------------
    def holder(self) -> dict | None:
        return parse_holder(self.run(cmd.read_lock(), quiet=True).stdout)

    @contextlib.contextmanager
    def locked(self, tag: str, message: str = "", action: str = "deploy") -> Iterator[None]:
        """Hold the deploy lock for the block, its lease renewed meanwhile; released on any
        failure, Ctrl-C and SIGTERM included."""
        holder = json.dumps({
            "holder": f"{getpass.getuser()}@{socket.gethostname()}",
            "host": socket.gethostname(), "pid": os.getpid(),
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tag": tag, "action": action, "message": message,
            "lease": self.settings.lock_lease,
        })
        try:
            result = self.run(cmd.acquire_lock(holder), check=False, quiet=True)
        except BaseException:
            # Cut off (Ctrl-C, a dead network) while taking it: the VM may have made the lock
            # ours already, and only the VM can say.
            try:
                self.run(cmd.release_lock_if_ours(holder), quiet=True)
            except Exception:
                self.runner.say(f"the deploy lock on {self.runner.where} may be held by this "
                                "deploy (the VM did not answer while it was taken); `fab unlock` "
                                "shows and clears it once the VM answers")
            raise
        if result.exited == cmd.LOCK_BUSY_EXIT:
            raise DeployError(
                f"the VM is locked by another deploy: {describe_holder(result.stdout)}",
                "wait for it to finish; if it died, clear it with `fab unlock`",
            )
        if not result.ok:
            raise DeployError(f"could not take the deploy lock: {result.output[-200:]}",
                              f"check that {self.settings.app_dir} is writable on the VM")
        renewer = None
        self.holder_json = holder
        try:  # a signal while the renewer starts (it opens a channel) must not keep the lock
            renewer = LeaseRenewer.started(self.runner, self.settings, holder)
            self.show_broken_locks()
            self.settle_restore(holding=True)
            yield
        finally:
            self.holder_json = ""
            if renewer:
                renewer.stop()
            try:
                # A Ctrl-C now must not keep the lock (nor hide the error on its way out).
                with sigint_deferred(reraise=sys.exc_info()[0] is None):
                    self.run(cmd.release_lock_if_ours(holder), quiet=True)
            except Exception:  # the connection may be gone; say what is left
                self.runner.say(f"the deploy lock on {self.runner.where} is still held by this "
                                "deploy (the VM did not answer); clear it with `fab unlock` once "
                                "it answers")

    def show_broken_locks(self) -> None:
        """Say who broke a deploy's lock (`fab unlock --force`) since the last deploy."""
        if self.runner.dry_run:
            return
        out = self.run(cmd.unseen_lock_log(), quiet=True, check=False).stdout
        for line in out.splitlines():
            record = parse_json(line)
            if record:
                self.runner.say(f"note: {record.get('who', '?')} cleared the deploy lock at "
                                f"{record.get('time', '?')} with `fab unlock"
                                f"{' --force' if record.get('forced') else ''}`; it was held "
                                f"by {describe_holder(record.get('broke') or {})}")

    def hold_lock(self, serving: str) -> None:
        """Before a step that changes the VM: stop if this deploy no longer holds the lock
        (`fab unlock --force` cleared it, another deploy took it). `serving`: what serves."""
        if not self.holder_json or self.runner.dry_run:
            return
        result = self.run(cmd.check_lock(self.holder_json), quiet=True, check=False)
        if result.ok:
            return
        if result.exited != cmd.LOCK_LOST_EXIT:
            raise DeployError(f"could not check the deploy lock on {self.runner.where}: "
                              f"{result.output.strip()[-200:]}; nothing more was changed",
                              "`fab status` shows what serves; deploy again")
        lines = result.stdout.strip().splitlines()
        broken = next((parse_json(line[7:]) for line in lines if line.startswith("broken ")),
                      None)
        ours = parse_json(self.holder_json) or {}
        if broken and str(broken.get("time", "")) < str(ours.get("time", "")):
            broken = None  # an older break, not of this deploy's lock
        holder = parse_holder("\n".join(line for line in lines
                                         if not line.startswith("broken ")))
        cleared = (f"{broken.get('who', '?')} (`fab unlock"
                   f"{' --force' if broken.get('forced') else ''}` at "
                   f"{broken.get('time', '?')})" if broken else "")
        if holder:
            who = "taken by " + describe_holder(holder) + (
                f" after it was broken by {cleared}" if cleared else "")
        else:
            who = f"cleared by {cleared}" if cleared else "cleared (it is free)"
        self.holder_json = ""  # not ours: the release at the end must not touch it
        raise DeployError(f"the deploy lock on {self.runner.where} was {who}; nothing more "
                          f"was changed; {serving or 'nothing'} is serving",
                          "`fab status` shows what serves and who holds the lock; deploy "
                          "again once the lock is free")

    # -- a restore cut off ---------------------------------------------------------------
    def record_restore(self, entry: dict) -> None:
        """Append a restore's record to the history (the release files stay as they are)."""
        line = json.dumps(entry, sort_keys=True)
        self.run(cmd.append_history(line), quiet=True)
        if self.facts:
            self.facts.history.append(line)

    def settle_restore(self, lock_alive: bool = False, holding: bool = False) -> None:
        """A restore whose `fab` was killed leaves its marker: record the restore if the
        database was replaced, else say it was not; either way say what to do. With
        `lock_alive` (another command holds the lock) only say that a restore is under way;
        `holding` the lock, refuse to go on while a killed restore's data step still runs."""
        if self.runner.dry_run:
            return
        state, _, raw = self.run(cmd.restore_state(), quiet=True,
                                 check=False).stdout.strip().partition("\n")
        if not state:
            return
        try:
            mark = json.loads(raw)
        except json.JSONDecodeError:
            mark = {}
        mark = mark if isinstance(mark, dict) else {}
        name, saved, tag = mark.get("backup", "?"), mark.get("saved", ""), mark.get("tag", "")
        started = f"`fab restore --backup={name}` of {mark.get('time', '?')} by " \
            f"{mark.get('who', '?')}"
        if state == "running" and holding:
            raise DeployError(f"{started} was cut off, but its restore still runs on the VM; "
                              "nothing was changed",
                              "wait a minute for it to finish, then run this command again")
        if state == "running" or lock_alive:
            self.runner.say(f"note: {started} is under way on the VM")
            return
        undo = f"; `fab restore --backup={saved}` puts back the database it replaced" \
            if saved else ""
        if state == "done":
            with sigint_deferred():
                self.record_restore({**mark, "kind": "restore", "revision": self.revision(),
                                     "healthy": False, "cut_off": True})
                self.run(cmd.restore_clear(), quiet=True)
            self.runner.say(
                f"warning: {started} was cut off after the database was replaced by {name}: "
                f"recorded now. The app may be stopped: `fab status` shows it; `fab rollback "
                f"--tag={tag or 'TAG'}` starts it{undo}.{self.maintenance_left()}")
            return
        self.run(cmd.restore_clear(), quiet=True)
        # cut off before the data step: the data as it was, and the release that served it
        start = tag if state == "died" else (mark.get("previous") or tag)
        stopped = f"The app may be stopped: `fab status` shows it; `fab rollback --tag=" \
            f"{start or 'TAG'}` starts it"
        if state == "died":  # nothing on the VM says how far it got: say so, guess nothing
            self.runner.say(
                f"warning: {started} was cut off during its data step and its helper on the VM "
                f"ended before the database was known to equal {name}: it may or may not "
                f"(Postgres: one transaction, all of it or nothing). Not recorded. {stopped}; "
                f"`fab restore --backup={name}` makes it certain"
                + (f", `fab restore --backup={saved}` puts back the database as it was"
                   if saved else "") + f".{self.maintenance_left()}")
            return
        self.runner.say(f"warning: {started} was cut off before the database changed: the "
                        f"database is as it was, nothing to record. {stopped}."
                        f"{self.maintenance_left()}")

    # -- maintenance mode behind the proxy (turned on and off by deploy/release/maintenance.py)
    def maintenance_state(self) -> dict | None:
        """Who turned maintenance on, when and why ({} if unknown), or None when it is off."""
        if self.runner.dry_run:
            return None
        out = self.run(pcmd.maintenance_state(self.settings.proxy_dir, self.project), cwd="",
                       quiet=True, check=False).stdout
        first, _, rest = out.partition("\n")
        if first.strip() != "on":
            return None
        try:
            info = json.loads(rest)
        except json.JSONDecodeError:
            return {}
        return info if isinstance(info, dict) else {}

    def maintenance_left(self) -> str:
        """After a restore that was killed: a sentence saying its maintenance mode is still
        on ('' when it is not, or there is no proxy). It is left on: the app may be stopped,
        and the page tells users more than an error does."""
        if not self.settings.proxy:
            return ""
        info = self.maintenance_state()
        if info is None:
            return ""
        return (f" Maintenance mode is still on ({describe_maintenance(info)}): "
                "`fab maintenance off` once the app serves.")

    # -- the release files --------------------------------------------------------------
    def current_tag(self) -> str:
        """The release the VM should run: the recorded one, else what the running container
        runs, else the newest history entry (with a warning saying what to repair)."""
        if self._current is not None:
            return self._current
        var = self.settings.tag_variable
        if self.facts:
            tag = self.facts.release_tag or self.facts.dotenv_tag
        else:
            tag = self.run(cmd.read_var(cmd.RELEASE_ENV, var), quiet=True).stdout.strip() or \
                self.run(cmd.read_var(cmd.COMPOSE_ENV, var), quiet=True).stdout.strip()
        source = ""
        if not tag:
            self._current = ""  # what compose() needs to ask the container
            tag, source = self.running_tag(), "the running container"
        if not tag:
            history = self.history()
            tag, source = (history[-1]["tag"] if history else ""), "the release history"
        if tag and source:
            self.runner.say(f"warning: {self.settings.app_dir}/{cmd.RELEASE_ENV} names no "
                            f"current release; using {tag} from {source} (`fab setup` or the "
                            "next deploy rewrites it)")
        self._current = tag
        return tag

    def merge_app_env(self, app_values: dict[str, str]) -> tuple[list[str], list[str]]:
        """Add and update app.env's keys from `app_values`, keeping the keys only the VM has
        (set with `fab env set`): (keys whose value changed, keys kept), names only."""
        skip = {self.settings.image_variable, self.settings.tag_variable}
        text = contract.env_text({k: v for k, v in app_values.items() if k not in skip},
                                 self.compose_kind())
        result = self.run(cmd.env_merge(cmd.APP_ENV), stdin=text.rstrip("\n"), quiet=True,
                          what=f"could not write {cmd.APP_ENV} on the VM")
        said = [line.split(" ", 1) for line in result.stdout.splitlines() if " " in line]
        return ([k for verb, k in said if verb == "changed"],
                [k for verb, k in said if verb == "kept"])

    def release_texts(self, tag: str) -> tuple[str, str, str]:
        """(.deploy/release.env, what .env holds after app.env's lines, .deploy/release.yaml
        or '') for release `tag`. .env is app.env plus the project name and the
        release, for a plain `docker compose up -d`; when a service reads .env itself, the
        release goes to an override file instead, which .env names in COMPOSE_FILE."""
        kind = self.compose_kind()
        release = contract.env_text(self.release_vars(tag) if tag else
                                    {self.settings.image_variable: self.image}, kind)
        readers = contract.services_reading_dotenv(self.settings.path(self.settings.compose_file))
        project = contract.env_text({"COMPOSE_PROJECT_NAME": self.project}, kind)
        files = [self.settings.compose_file, *self.overrides]
        if self.settings.proxy:  # the web service's proxy form, from the laptop's compose file
            form = proxyform.override_text(self.settings, kind)
            if form != self._proxy_form_written:  # once a connection: it depends on no tag
                self.write(cmd.PROXY_OVERRIDE, form)
                self._proxy_form_written = form
        if readers:
            # A service reads .env: it must not change per release. A plain `compose up -d`
            # finds the release in an override file that .env names (constant lines).
            override = contract.release_override(self.settings.service,
                                                 self.ref(tag) if tag else "")
            tail = project + contract.env_text(
                {"COMPOSE_FILE": ":".join([*files, cmd.RELEASE_OVERRIDE])}, kind)
        else:
            # a plain `compose up -d` merges the proxy's form too
            override, tail = "", project + release + (contract.env_text(
                {"COMPOSE_FILE": ":".join(files)}, kind) if self.overrides else "")
        return release.rstrip("\n"), tail.rstrip("\n"), override.rstrip("\n")

    def write_release_files(self, tag: str, then: list[str] | None = None) -> tuple[bool, str]:
        """Write .deploy/release.env and .env (and the override) for release `tag`, each only
        if it changed, then run `then` in the same round trip: (whether .env changed, what
        `then` printed). Raises if a file could not be written or `then` failed."""
        release, tail, override = self.release_texts(tag)
        result = self.run(cmd.release_files(release, tail, override, then), quiet=True,
                          check=False)
        rewritten, output = parse_release_files(result.stdout)
        if not result.ok and not self.runner.dry_run:
            ran = f"{MARK}{OUTPUT}" in result.stdout
            detail = redact("\n".join(result.output.strip().splitlines()[-15:]),
                            self.runner.secrets)
            if ran and then:
                raise DeployError(f"`{' '.join(then[-3:])}` on the VM failed\n{detail}",
                                  "fix the compose file (or app.env) it names, then `fab setup`")
            raise DeployError(f"could not write the release files (.env, {cmd.RELEASE_ENV}) "
                              f"on the VM\n{detail}",
                              "check the disk (df -h) and that the SSH user may write app_dir")
        self._current = tag
        return cmd.COMPOSE_ENV in rewritten, output

    def write(self, path: str, text: str) -> bool:
        result = self.run(cmd.write_file(path), stdin=text.rstrip("\n"), quiet=True,
                          what=f"could not write {path} on the VM")
        return "rewritten" in result.stdout

    def sync_release_env(self, tag: str, render: str | None = None) -> dict:
        """Make the release files app.env plus the current release again, before compose reads
        them (a deleted or garbled .env stops every compose command); says so if it had to.
        With `render` (a tag), compose then renders the compose file with that release in the
        same round trip: the rendered config ({} without)."""
        then = cmd.config(self.compose(render), self.compose_kind()) if render else None
        changed, output = self.write_release_files(tag, then)
        if changed:
            self.runner.say(f"warning: {self.settings.app_dir}/{cmd.COMPOSE_ENV} was not "
                            f"{cmd.APP_ENV} plus the current release ({tag or 'none'}); "
                            "rewrote it")
        if render is None or self.runner.dry_run:
            return {}
        self.rendered[render] = contract.parse_config(output)
        return self.rendered[render]

    # -- queries --------------------------------------------------------------------------
    def running(self) -> tuple[str, str]:
        """(image id, image reference) of the service's running container (('', '') if none)."""
        out = self.run(cmd.running_image(self.compose(), self.settings.service),
                       quiet=True, check=False).stdout.split()
        return (out[0], out[1]) if len(out) == 2 else ("", "")

    def running_tag(self) -> str:
        """The tag the service container runs ('' if none runs, or not of our image)."""
        image = self.running()[1]
        return image.rsplit(":", 1)[-1] if image.startswith(self.image + ":") else ""

    def health(self) -> str:
        """The service container's state right now (healthy, unhealthy, running, missing)."""
        result = self.run(cmd.health_state(self.compose(), self.settings.service),
                          check=False, quiet=True)
        state = next(iter(result.stdout.split()), "unknown")
        if state == "missing" and not self.run(docker.engine_info(), check=False,
                                               quiet=True).ok:
            return "unknown (the Docker engine does not answer)"
        return state

    def is_serving(self, tag: str) -> bool:
        """Whether `tag` is the recorded release and its container is healthy right now."""
        if self.current_tag() != tag:
            return False
        return self.health() in ("healthy", "running")

    def revision(self) -> str:
        """The database's Alembic revision ('' if unknown): read through the database
        container for Postgres, else `alembic current` in the running app container. After a
        rollback without --downgrade the serving image's migrations stop before the
        database's revision and its `alembic current` fails, naming that revision."""
        s = self.settings
        if s.database == "none" and not s.migrate_command:
            return ""
        if s.database == "postgres" and not s.database_url:
            result = self.run(cmd.read_alembic_version(self.compose(), s.postgres_service,
                                                       s.postgres_user, s.postgres_db),
                              check=False, quiet=True)
            return parse_revision(result.stdout) if result.ok else ""
        result = self.run(cmd.exec_in_service(self.compose(), s.service,
                                              f"{self.alembic} current"),
                          check=False, quiet=True)
        return parse_revision(result.stdout) if result.ok else unknown_revision(result.stderr)

    def history(self) -> list[dict]:
        """The release records (deploys and rollbacks), oldest first: what a rollback picks
        from and retention keeps. Restore records are left out: they are not releases."""
        return [e for e in self.records() if is_release(e)]

    def records(self) -> list[dict]:
        """Every record of the history file: the releases and the restores (`fab releases`)."""
        entries, bad = [], []
        lines = self.facts.history if self.facts else \
            self.run(cmd.read_history(), quiet=True).stdout.splitlines()
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if isinstance(entry, dict) and isinstance(entry.get("tag"), str):
                entries.append(entry)
            elif line.strip():
                bad.append(number)
        if bad:
            self.runner.say(
                f"warning: {cmd.HISTORY_FILE} line(s) {', '.join(map(str, bad[:5]))} are not "
                "release records and were skipped; repair or delete them on the VM"
            )
        return entries

    def backups(self) -> list[str]:
        return self.run(cmd.list_backups(), quiet=True).stdout.split()

    def backup_manifests(self) -> list[tuple[str, dict | None]]:
        """Each backup, newest first, with its manifest (None if it has none)."""
        return parse_manifests(self.run(cmd.list_manifests(), quiet=True).stdout)

    def config(self, tag: str) -> dict:
        """The compose file as compose renders it with release `tag`."""
        result = self.run(cmd.config(self.compose(tag), self.compose_kind()), quiet=True,
                          what="`docker compose config` on the VM failed",
                          fix="fix the compose file (or app.env) it names, then `fab setup`")
        self.rendered[tag] = contract.parse_config(result.stdout)
        return self.rendered[tag]

    def http_status(self, url: str) -> str:
        """The status code of `url` asked from the VM itself ('000' if nothing answers)."""
        result = self.run(cmd.http_status(url), quiet=True, check=False)
        if result.exited == cmd.HELPER_MISSING_EXIT:
            raise DeployError(f"cannot check health_url on the VM: {result.stdout.strip()}",
                              "install curl on the VM (or wget, or python3)")
        return result.stdout.strip() or "000"

    def wait_ready(self, check: Callable[[], bool], timeout: float,
                   interval: float = POLL) -> bool:
        """Poll `check()` until it is true or `timeout` passes (dry run: true at once)."""
        if self.runner.dry_run:
            return True
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)


def parse_manifests(output: str) -> list[tuple[str, dict | None]]:
    """`list-manifests` output -> (name, manifest or None), in its order."""
    out = []
    for line in output.splitlines():
        name, _, raw = line.partition("\t")
        if name:
            out.append((name, parse_json(raw) if raw != "-" else None))
    return out


def describe_backup(name: str, manifest: dict | None) -> str:
    """One line of `fab backups`: what the backup holds, from its manifest."""
    if manifest is None:
        return f"{name}  (no manifest: `fab restore` needs --force-unverified)"
    parts = [f"schema {manifest.get('revision') or '?'}"]
    if manifest.get("reason"):
        parts.append(str(manifest["reason"]))
    elif manifest.get("tag"):
        parts.append(f"taken before {manifest['tag']} was deployed")
    size = manifest.get("size")
    if isinstance(size, int) and size >= 0:
        parts.append(f"{size / 1024:.0f} KB" if size < 1 << 20 else f"{size / (1 << 20):.1f} MB")
    return f"{name}  " + ", ".join(parts)


def parse_json(text: str) -> dict | None:
    """A JSON object from a line the VM printed (None if it is not one)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def is_release(entry: dict) -> bool:
    """A deploy or rollback record; not a restore's (kind "restore") nor a failed hook's."""
    return entry.get("kind", "release") not in ("restore", "hook")


# Alembic's words when the database is at a revision the image's migrations do not have
UNKNOWN_REVISION_RE = re.compile(r"Can't locate revision identified by '(\w+)'")


def unknown_revision(output: str) -> str:
    """The database's revision a failed `alembic current` named as unknown to its scripts
    ('' if it failed otherwise)."""
    found = UNKNOWN_REVISION_RE.search(output)
    return found.group(1) if found else ""


def parse_revision(output: str) -> str:
    """The revision `alembic current` printed ('' if none), whatever else came with it."""
    for line in output.splitlines():
        match = REVISION_RE.match(line.strip())
        if match and line.strip() != cmd.REVISION_MARK:
            return match.group(1)
    return ""


def describe_maintenance(info: dict) -> str:
    """`since T by WHO (WHY)`, from what `VmQueries.maintenance_state` returned."""
    parts = [f"since {info['time']}" if info.get("time") else "",
             f"by {info['who']}" if info.get("who") else "",
             f"({info['reason']})" if info.get("reason") else ""]
    return " ".join(p for p in parts if p) or "(who turned it on is not known)"
