"""The remote half: one verified SSH connection per host, and the deploy flow on the VM.

Commands come from `deploy.commands.vm`; they run through the same Runner as local ones, so a
dry run prints them all and opens no connection.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deploy import envcheck, refs
from deploy.commands import vm as cmd
from deploy.errors import DeployError
from deploy.hostkeys import DEFAULT_KNOWN_HOSTS, KnownHostsPolicy
from deploy.runner import Runner
from deploy.settings import Settings
from deploy.shell import ConnectionLost

UPGRADE_RE = re.compile(r"Running upgrade \S* -> (\w+)")
BACKUP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Target:
    host: str
    user: str
    port: int


def targets(settings: Settings, hosts: list[str] | None = None) -> list[Target]:
    """The hosts to act on: `-H` values (user@host:port) or the settings' host(s)."""
    names = hosts or [h.strip() for h in settings.host.split(",") if h.strip()]
    if not names:
        raise DeployError(
            "no VM host is set", "set host = \"vm.example.com\" in deploy.toml or pass -H HOST"
        )
    out = []
    for name in names:
        user = settings.user or getpass.getuser()
        port = settings.port
        if "@" in name:
            user, name = name.split("@", 1)
        if name.count(":") == 1:
            name, raw_port = name.split(":")
            port = int(raw_port)
        out.append(Target(name, user, port))
    return out


def check_key_file(key_file: Path) -> None:
    """Refuse, before any connection, a key_file that is missing or not a private key."""
    import paramiko

    fix = "set key_file in deploy.toml (or DEPLOY_KEY_FILE) to your private key, not the .pub"
    if not key_file.exists():
        raise DeployError(f"SSH key {key_file} does not exist", fix)
    if not key_file.is_file():
        raise DeployError(f"SSH key {key_file} is not a file", fix)
    try:
        paramiko.PKey.from_path(key_file)
    except paramiko.PasswordRequiredException:
        raise DeployError(f"SSH key {key_file} is protected by a passphrase",
                          "use a deploy key without a passphrase, or unset key_file and load "
                          "the key into ssh-agent") from None
    except OSError as exc:
        raise DeployError(f"cannot read SSH key {key_file}: {exc.strerror}",
                          "fix its permissions") from None
    except (paramiko.SSHException, paramiko.UnknownKeyType, ValueError):
        raise DeployError(f"{key_file} is not an SSH private key", fix) from None


def connect(settings: Settings, target: Target):
    """An open Fabric Connection whose host key was checked against known_hosts."""
    import paramiko
    from fabric import Connection

    key_file = settings.key_file and Path(settings.key_file).expanduser()
    if key_file:
        check_key_file(key_file)
    known_hosts = Path(settings.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
    connect_kwargs: dict = {"allow_agent": not key_file, "look_for_keys": not key_file}
    if key_file:
        connect_kwargs["key_filename"] = str(key_file)
    conn = Connection(
        target.host,
        user=target.user,
        port=target.port,
        connect_timeout=settings.connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    conn.client.set_missing_host_key_policy(KnownHostsPolicy([known_hosts]))
    where = f"{target.host}:{target.port}"
    trust = (
        f"if it is really your VM, add its key: ssh-keyscan -p {target.port} {target.host} "
        f">> {known_hosts}"
    )
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise DeployError(
            f"the host key of {where} CHANGED since it was trusted: refusing to connect",
            f"if the VM was rebuilt, remove its line from {known_hosts} and trust the new key",
        ) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise DeployError(f"the host key of {where} is unknown: refusing", trust) from None
        if isinstance(exc, paramiko.AuthenticationException):
            raise DeployError(
                f"SSH login as {target.user} on {where} was refused",
                "check user and key_file, and that the key is in the VM's authorized_keys",
            ) from None
        raise DeployError(f"SSH to {where} failed: {exc}", "check the VM and its sshd") from None
    except socket.gaierror:
        raise DeployError(f"unknown host {target.host!r}", "check host in deploy.toml") from None
    except (OSError, TimeoutError) as exc:
        raise DeployError(
            f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}",
            "check that the VM is up and its sshd listens there",
        ) from None
    return conn


@contextlib.contextmanager
def session(settings: Settings, target: Target, dry_run: bool = False) -> Iterator[Vm]:
    """A Vm on one connection for a whole task (none at all in a dry run)."""
    if dry_run:
        yield Vm(settings, Runner(None, where=target.host, dry_run=True, cwd=settings.app_dir))
        return
    from deploy.shell import RemoteShell

    conn = connect(settings, target)
    shell = RemoteShell(conn, where=target.host)
    try:
        yield Vm(settings, Runner(shell, where=target.host, secrets=settings.secrets,
                                  cwd=settings.app_dir))
    finally:
        shell.close()
        conn.close()


class Vm:
    """The app on one VM: each method is one step, built from `deploy.commands.vm`."""

    def __init__(self, settings: Settings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self._compose_kind = ""
        self.serving = ""  # the container a proxy switch left serving (recorded)

    # -- basics -------------------------------------------------------------------------
    @property
    def image(self) -> str:
        return refs.validate_image(self.settings.require("image"))

    def ref(self, tag: str) -> str:
        return f"{self.image}:{refs.validate_tag(tag)}"

    def compose_kind(self) -> str:
        if self._compose_kind:
            return self._compose_kind
        wanted = self.settings.compose_command
        if wanted != "auto" or self.runner.dry_run:
            self._compose_kind = "v2" if wanted == "auto" else wanted
        else:
            result = self.runner.run(cmd.detect_compose(), check=False, quiet=True)
            if not result.ok:
                raise DeployError(
                    "neither `docker compose` nor `docker-compose` works on the VM",
                    "install Docker Compose on the VM",
                )
            self._compose_kind = result.stdout.strip()
        return self._compose_kind

    @property
    def project(self) -> str:
        """The compose project name: the app directory's name, alphanumerics only."""
        return cmd.project_name(self.settings.app_dir)

    def compose(self) -> list[str]:
        return cmd.compose(self.compose_kind(), self.settings.compose_file, self.project)

    def run(self, argv: list[str], **kwargs):
        return self.runner.run(argv, **kwargs)

    def upload(self, local: Path, remote_name: str, mode: int) -> None:
        """Upload a file over SFTP: mode set before any byte is written, then renamed in."""
        remote = f"{self.settings.app_dir}/{remote_name}"
        if not local.is_file():
            raise DeployError(f"{local} does not exist", f"create it (see {local.name}.example)")
        self.runner.say(f"upload {local} -> {remote} (mode {mode:o})")
        if self.runner.dry_run:
            return
        sftp = self.runner.target.connection.sftp()
        partial = f"{remote}.upload"
        with sftp.open(partial, "w") as handle:
            sftp.chmod(partial, mode)
            handle.write(local.read_bytes())
        sftp.posix_rename(partial, remote)

    # -- lock ---------------------------------------------------------------------------
    def holder(self) -> dict | None:
        if self.runner.dry_run:
            return None
        out = self.run(cmd.read_lock(), quiet=True).stdout.strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return {"holder": "unknown (holder.json unreadable)"}

    @contextlib.contextmanager
    def locked(self, tag: str, message: str = "", action: str = "deploy") -> Iterator[None]:
        """Hold the deploy lock for the block; released on any failure, Ctrl-C included."""
        holder = {
            "holder": f"{getpass.getuser()}@{socket.gethostname()}",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tag": tag,
            "action": action,
            "message": message,
        }
        if not self.runner.dry_run:
            self.run(cmd.make_dirs(self.settings.app_dir), quiet=True, cwd="")
        try:
            result = self.run(cmd.acquire_lock(json.dumps(holder)), check=False)
        except BaseException:
            # Cut off (Ctrl-C) while taking it: the VM may have made the lock ours already.
            with contextlib.suppress(Exception):
                self.run(cmd.release_lock_if_ours(json.dumps(holder)), quiet=True)
            raise
        if result.exited == cmd.LOCK_BUSY_EXIT:
            raise DeployError(
                f"the VM is locked by another deploy: {describe_holder(result.stdout)}",
                "wait for it to finish; if it died, clear it with `fab unlock`",
            )
        if not result.ok:
            raise DeployError(
                f"could not take the deploy lock: {result.output[-200:]}",
                f"check that {self.settings.app_dir} is writable on the VM (fab setup)",
            )
        try:
            yield
        finally:
            try:
                # A Ctrl-C now must not keep the lock (nor hide the error on its way out).
                with sigint_deferred(reraise=sys.exc_info()[0] is None):
                    self.run(cmd.release_lock(), quiet=True)
            except Exception:  # the connection may be gone; say what to do
                self.runner.say("could not release the deploy lock; clear it with `fab unlock`")

    # -- steps --------------------------------------------------------------------------
    def current_tag(self) -> str:
        """The release the VM should run: .env's DEPLOY_TAG, else what the running container
        runs, else the newest history entry (with a warning saying what to repair)."""
        if self.runner.dry_run:
            return ""
        tag = self.run(cmd.read_current_tag(), quiet=True).stdout.strip()
        if tag:
            return tag
        tag, source = self.running_tag(), "the running container"
        if not tag:
            history = self.history()
            tag, source = (history[-1]["tag"] if history else ""), "the release history"
        if tag:
            self.runner.say(f"warning: {self.settings.app_dir}/{cmd.COMPOSE_ENV} names no "
                            f"current release; using {tag} from {source} (`fab setup` or the "
                            "next deploy rewrites it)")
        return tag

    def sync_release_env(self, tag: str) -> None:
        """Make .env app.env plus the current release again, before compose reads it: a
        deleted .env loses app.env's variables (a port, say) and a garbled one stops every
        compose command. Run under the lock; says so when it had to rewrite it."""
        if self.runner.dry_run:
            return
        result = self.run(cmd.sync_release_env(self.image, tag), quiet=True, check=False)
        if "rewritten" in result.stdout:
            self.runner.say(f"warning: {self.settings.app_dir}/{cmd.COMPOSE_ENV} was not "
                            f"{cmd.APP_ENV} plus the current release ({tag or 'none'}); "
                            "rewrote it")

    def running_tag(self) -> str:
        """The tag the service container runs ('' if none runs, or not of our image)."""
        if self.runner.dry_run:
            return ""
        image = self.run(cmd.running_image(self.compose(), self.settings.service),
                         quiet=True, check=False).stdout.strip()
        return image.rsplit(":", 1)[-1] if image.startswith(self.image + ":") else ""

    def pull(self, tag: str) -> str:
        ref = self.ref(tag)
        self.run(cmd.pull(ref), hide=True, what=f"the VM could not pull {ref}",
                 fix="check that the VM can reach the registry and is logged in (fab setup)")
        if self.runner.dry_run:
            return ""
        raw = self.run(cmd.repo_digests(ref), quiet=True, check=False).stdout.strip() or "[]"
        digests = json.loads(raw)
        return next((d for d in digests if d.startswith(self.image + "@")), "").split("@")[-1]

    def backup(self, tag: str) -> str:
        s = self.settings
        if s.database == "none":
            return ""
        name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{tag}"
        if s.database == "sqlite":
            argv = cmd.backup_sqlite(s.sqlite_path, name, s.keep_backups)
        else:
            argv = cmd.backup_postgres(self.compose(), s.postgres_service, s.postgres_user,
                                       s.postgres_db, name, s.keep_backups)
        result = self.run(argv, hide=True, what="the database backup failed; nothing was "
                          "migrated or switched", fix="free disk space on the VM (df -h) "
                          "and check the database, then deploy again")
        return (result.stdout.strip().splitlines() or [""])[0]

    def wait_for_leftovers(self) -> None:
        """Wait for one-off containers an interrupted deploy left running (its migration goes
        on without it): two migrations must never run at once."""
        if self.runner.dry_run:
            return
        names = self.run(cmd.oneoff_containers(self.project), quiet=True,
                         check=False).stdout.split()
        if not names:
            return
        wait = self.settings.health_timeout
        self.runner.say(f"waiting up to {wait:.0f}s for {', '.join(names)}: left running by an "
                        "interrupted deploy (a migration may still be going on)")
        self.run(cmd.wait_no_oneoffs(self.project, wait), quiet=True,
                 what=f"{', '.join(names)} still runs on the VM after {wait:.0f}s; nothing was "
                      "migrated or switched",
                 fix=f"see what it does (`docker logs {names[0]}` on the VM), wait for it or "
                     "stop it, then deploy again")

    def migrate(self, tag: str, backup: str = "") -> str:
        """Migrate with the NEW image before switching; on failure the old one keeps serving.

        Returns the revision Alembic reported upgrading to ('' if it ran no migration).
        `backup` is the one taken just before (named in the fix if the migration fails).
        """
        command = self.settings.migrate_command
        if not command:
            return ""
        self.wait_for_leftovers()
        name = backup.removeprefix(f"{cmd.BACKUP_DIR}/") if backup.startswith(
            f"{cmd.BACKUP_DIR}/") else ""
        result = self.run(
            cmd.with_release(self.image, tag, cmd.run_in_new_container(
                self.compose(), self.settings.service, command)),
            hide=True,
            what=f"migration with {tag} failed; the previous version is still serving",
            fix="fix the migration, push a new tag and deploy again"
                + (f"; if it changed the database before failing, `fab restore --backup={name}`"
                   " puts back the copy taken just before" if name else
                   " (fab backups lists the backup taken just before)"),
        )
        upgrades = UPGRADE_RE.findall(result.output)
        return upgrades[-1] if upgrades else ""

    def switch(self, tag: str) -> None:
        self.run(cmd.with_release(self.image, tag, cmd.up(self.compose())), hide=True,
                 what=f"`compose up` with {tag} failed", fix="see the output above")

    def wait_healthy(self) -> str:
        from deploy.local import wait_for_http

        result = self.run(cmd.wait_healthy(self.compose(), self.settings.service,
                                           self.settings.health_timeout), check=False)
        state = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if not result.ok:
            return state or f"exit {result.exited}"
        if self.settings.health_url and not self.runner.dry_run:
            status = wait_for_http(self.settings.health_url, self.settings.health_timeout)
            if status != 200:
                return f"{self.settings.health_url} answered {status}"
        return ""

    def is_serving(self, tag: str) -> bool:
        """Whether `tag` is the recorded release and its container is healthy right now."""
        if self.runner.dry_run or self.current_tag() != tag:
            return False
        return self.health() in ("healthy", "running")

    def health(self) -> str:
        """The service container's state right now (healthy, unhealthy, running, missing)."""
        result = self.run(cmd.health_state(self.compose(), self.settings.service),
                          check=False, quiet=True)
        return result.stdout.strip() or "unknown"

    def revision(self) -> str:
        if self.runner.dry_run or not self.settings.migrate_command.startswith("alembic"):
            return ""
        result = self.run(cmd.exec_in_service(self.compose(), self.settings.service,
                                              "alembic current 2>/dev/null"),
                          check=False, quiet=True)
        words = result.stdout.split()
        return words[0] if result.ok and words else ""

    def record(self, entry: dict) -> None:
        if self.serving:  # behind the proxy: which container serves this release
            entry["container"] = self.serving
        self.run(cmd.append_history(json.dumps(entry, sort_keys=True)), quiet=True)
        self.run(cmd.write_release_env(self.image, entry["tag"]), quiet=True)

    def history(self) -> list[dict]:
        if self.runner.dry_run:
            return []
        entries, bad = [], []
        lines = self.run(cmd.read_history(), quiet=True).stdout.splitlines()
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


@contextlib.contextmanager
def sigint_deferred(reraise: bool = False) -> Iterator[list[int]]:
    """Run a short block to its end even if Ctrl-C comes; the list it yields is non-empty if
    one came (then re-raised as KeyboardInterrupt after the block when `reraise`)."""
    import signal
    import threading

    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and reraise:
        raise KeyboardInterrupt


def describe_holder(raw: str) -> str:
    try:
        data = json.loads(raw.strip() or "{}")
    except json.JSONDecodeError:
        return "unknown holder"
    if not data:
        return "unknown holder"
    parts = [data.get("holder", "?"), f"since {data.get('time', '?')}"]
    if data.get("tag"):
        parts.append(f"{data.get('action', 'deploy')} of {data['tag']}")
    if data.get("message"):
        parts.append(f"({data['message']})")
    return " ".join(parts)


def last_revision(history: list[dict]) -> str:
    return next((e["revision"] for e in reversed(history) if e.get("revision")), "")


def release_entry(tag: str, digest: str, revision: str, action: str, previous: str,
                  git_sha: str = "") -> dict:
    return {
        "tag": tag,
        "digest": digest,
        "git_sha": git_sha,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "revision": revision,
        "action": action,
        "previous": previous,
    }


def cut_short(exc: BaseException, step: str, tag: str, previous: str) -> DeployError:
    """Ctrl-C or a dropped connection before the switch: what is left and what to do."""
    serving = f"{previous or 'the previous version'} is still serving"
    if isinstance(exc, KeyboardInterrupt):
        what, code, serving = "interrupted", 130, f"{serving} and the lock was released"
    else:
        what, code = f"the SSH connection to {getattr(exc, 'where', 'the VM')} was lost", 1
    if step == "migrate":
        serving += " (the migration may still finish on the VM: the next deploy waits for it)"
    return DeployError(f"{what} during {step} of {tag}; {serving}",
                       "run the same deploy again (`fab status` shows what is serving)",
                       exit_code=code)


def switch_back(vm: Vm, tag: str, previous: str, why: str) -> str:
    """Put `previous` back after `tag` failed; a sentence saying how that went."""
    if not (vm.settings.rollback_on_failure and previous and previous != tag):
        return "no switch back (" + ("rollback_on_failure is off" if previous
                                      else "no previous release recorded") + ")"
    vm.runner.say(f"{why}; switching back to {previous}")
    vm.switch(previous)
    again = vm.wait_healthy()
    return f"switched back to {previous}" + (f", which is {again} too" if again else "")


def switch_checked(vm: Vm, tag: str, previous: str) -> None:
    """Switch to `tag` and wait for health; on failure switch back to `previous` (if allowed)."""
    if vm.settings.proxy:  # issue 11: blue/green behind Caddy instead of compose recreate
        from deploy import proxy

        return proxy.switch_checked(vm, tag, previous)
    try:
        vm.switch(tag)
        problem = vm.wait_healthy()
    except (KeyboardInterrupt, DeployError) as exc:
        # Interrupted or cut off mid-switch: put the recorded release back before we leave.
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
            f"the SSH connection to {exc.where} was lost" if isinstance(exc, ConnectionLost)
            else exc.message)
        back = switch_back(vm, tag, previous, f"switching to {tag} failed: {what}")
        raise DeployError(f"switching to {tag} failed ({what}); {back}",
                          "run the same deploy again", exit_code=130 if isinstance(
                              exc, KeyboardInterrupt) else 1) from None
    if not problem:
        return
    back = switch_back(vm, tag, previous, f"{tag} is not healthy ({problem})")
    raise DeployError(
        f"{tag} did not turn healthy ({problem}); {back}",
        "look at `fab logs`, fix the app and deploy a new tag"
        if back.startswith("switched") or not previous
        # The failed tag was not recorded: a bare `fab rollback` would pick the one before.
        else f"`fab rollback --tag={previous}` puts the previous release back",
    )


def deploy(vm: Vm, tag: str, *, git_sha: str = "", message: str = "",
           lock: bool = True) -> dict:
    """Lock, pull, back up, migrate, switch, check health, record. Returns the history entry.

    With lock=False the caller already holds the deploy lock (`inv deploy` takes it first).
    """
    started = time.monotonic()
    with vm.locked(tag, message) if lock else contextlib.nullcontext():
        envcheck.require_app_env(vm)  # issue 10: app.env has every key of .env.example, else refuse
        previous = vm.current_tag()
        vm.sync_release_env(previous)
        step = "pull"
        try:
            digest = vm.pull(tag)
            step = "backup"
            backup = vm.backup(tag)
            step = "migrate"
            revision = vm.migrate(tag, backup)
        except (KeyboardInterrupt, ConnectionLost) as exc:
            raise cut_short(exc, step, tag, previous) from None
        switch_checked(vm, tag, previous)
        # No migration ran: the schema is the previous release's (ask Alembic if unknown).
        # The new version serves healthy: a Ctrl-C now waits until it is recorded (else .env
        # and the history would name the old one while the new one runs).
        with sigint_deferred() as interrupted:
            revision = revision or last_revision(vm.history()) or vm.revision()
            entry = release_entry(tag, digest, revision, "deploy", previous, git_sha)
            if not vm.runner.dry_run:
                vm.record(entry)
        if interrupted:
            vm.runner.say(f"Ctrl-C came after {tag} turned healthy: it was recorded all the same")
    vm.runner.say(f"deployed {tag} in {time.monotonic() - started:.1f}s")
    return entry


def pick_rollback_tag(history: list[dict], current: str, tag: str) -> str:
    """`tag` if given, else the newest release before the current one."""
    if tag:
        return refs.validate_tag(tag)
    for entry in reversed(history):
        if entry["tag"] != current:
            return entry["tag"]
    raise DeployError("there is no earlier release to roll back to", "name one: --tag=T")


def rollback(vm: Vm, tag: str = "", downgrade: bool = False, known_in_registry=None) -> dict:
    """Put an earlier release back, through the same lock and health-checked switch."""
    history = vm.history()
    current = vm.current_tag()
    target = pick_rollback_tag(history, current, tag)
    entries = {e["tag"]: e for e in history}
    # The schema a release was deployed with: a rollback records the database's revision then,
    # which (without --downgrade) is newer than the release itself.
    deployed = {e["tag"]: e for e in history if e.get("action", "deploy") == "deploy"}
    if target not in entries and not (known_in_registry and known_in_registry(target)):
        raise DeployError(
            f"{target} is neither in the release history nor in the registry",
            "pick a tag from `fab releases`",
        )
    with vm.locked(target, action="rollback"):
        vm.sync_release_env(current)
        digest = vm.pull(target)
        wanted = (deployed.get(target) or entries.get(target, {})).get("revision", "")
        now = vm.revision()
        if wanted and now and wanted != now:
            if downgrade:
                vm.runner.say(f"downgrading the schema {now} -> {wanted} with {current}")
                vm.run(
                    cmd.with_release(vm.image, current, cmd.run_in_new_container(
                        vm.compose(), vm.settings.service, f"alembic downgrade {wanted}")),
                    hide=True, what=f"alembic downgrade to {wanted} failed; {current} still serves",
                    fix="look at the migration's downgrade() and the database",
                )
            else:
                vm.runner.say(
                    f"warning: {target} was released with schema {wanted}, the database is at "
                    f"{now}; not downgrading (pass --downgrade to run `alembic downgrade {wanted}`)"
                )
        switch_checked(vm, target, current)
        # An older image may not know a newer schema's revision: then the database's is `now`.
        with sigint_deferred() as interrupted:  # as in deploy: record what now serves
            revision = vm.revision() or (wanted if downgrade and wanted else now)
            entry = release_entry(target, digest, revision, "rollback", current)
            if not vm.runner.dry_run:
                vm.record(entry)
        if interrupted:
            vm.runner.say(f"Ctrl-C came after {target} turned healthy: it was recorded all the "
                          "same")
    vm.runner.say(f"rolled back to {target}")
    return entry


def validate_backup_name(name: str) -> str:
    if not name or not set(name) <= BACKUP_NAME_CHARS or name.startswith("."):
        raise DeployError(f"{name!r} is not a backup name", "pick one from `fab backups`")
    return name


def restore(vm: Vm, name: str) -> None:
    """Stop the app, put a backup back in place of the database, start it, check health."""
    s = vm.settings
    validate_backup_name(name)
    if name not in vm.run(cmd.list_backups(), quiet=True).stdout.split() and not vm.runner.dry_run:
        raise DeployError(f"there is no backup {name!r} on the VM", "pick one from `fab backups`")
    current = vm.current_tag()
    with vm.locked(current, action="restore", message=name):
        vm.sync_release_env(current)
        if s.database == "sqlite":
            vm.run(cmd.stop(vm.compose(), s.service), hide=True)
            vm.run(cmd.restore_sqlite(name, s.sqlite_path), what=f"restoring {name} failed",
                   fix="check the backups directory and disk space on the VM")
        else:
            vm.run(cmd.restore_postgres(vm.compose(), s.postgres_service, s.postgres_user,
                                        s.postgres_db, name), what=f"restoring {name} failed")
        vm.run(cmd.up(vm.compose()), hide=True)
        problem = vm.wait_healthy()
        if problem:
            raise DeployError(f"after the restore the app is not healthy ({problem})",
                              "look at `fab logs`")
    vm.runner.say(f"restored {name}")
