"""The steps of a release on one VM: check, pull, back up, migrate, switch, wait, record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath

from deploy.commands import docker
from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.core.runner import redact
from deploy.vm import contract, housekeeping
from deploy.vm.vm import VmQueries, parse_revision

BACKUP_EXT = {"sqlite": ".sqlite3", "postgres": ".dump"}
MANIFEST_MAKER = "deploy-toolkit"
STEADY_POLLS = 30  # polls of 0.1 s: a container with no health check that runs 3 s is up
BUSY = "database is locked"  # SQLite's own words when another connection holds the lock
FILE_KIND = {"sqlite": "sqlite", "postgres": "pgdump"}  # what the helper's file_format says
FILE_KIND_TEXT = {"sqlite": "an SQLite database", "pgdump": "a pg_dump custom-format archive"}


class Vm(VmQueries):
    """The app on one VM: each method is one step, built from `deploy.commands.vm`."""

    # -- before anything changes -----------------------------------------------------------
    def check_project(self) -> None:
        """Refuse when the compose project name is another app directory's on this VM."""
        app_dir = str(PurePosixPath(self.settings.app_dir))
        dirs = self.facts.project_dirs if self.facts else \
            self.run(cmd.project_dirs(self.project), quiet=True, check=False).stdout.split()
        others = [d for d in dirs if d and str(PurePosixPath(d)) != app_dir]
        if not others:
            names = self.facts.dir_projects if self.facts else \
                self.run(cmd.dir_projects(app_dir), quiet=True, check=False).stdout.split()
            older = [n for n in names if n != self.project]
            if older:  # e.g. deployed before project names carried a hash of app_dir
                raise DeployError(
                    f"the app in {app_dir} runs as compose project {older[0]!r}, not "
                    f"{self.project!r}: deploying would start a second copy beside it",
                    f"keep its name: project_name = \"{older[0]}\" in deploy.toml")
            return
        if others:
            raise DeployError(
                f"the compose project {self.project!r} on the VM belongs to {others[0]}, not to "
                f"{app_dir}: deploying would replace that app's containers",
                "give this app a project name of its own: project_name = \"...\" in "
                "deploy.toml (or leave it unset for one derived from app_dir)",
            )

    def check_contract(self, tag: str, config: dict | None = None) -> None:
        """The compose file runs exactly IMAGE:TAG for the service (and SQLite is on disk);
        `config`: the compose file as rendered with `tag`, if it was asked already. (Behind
        the proxy, deploy/vm/flows.py's `check_contract` adds the proxy's host names.)"""
        if self.runner.dry_run:
            return
        config = self.config(tag) if config is None else config
        contract.check_image(config, self.settings.service, self.ref(tag),
                             self.release_vars(tag))
        self.check_sqlite_on_disk(config)
        if self.settings.health_url:  # says which tool the VM lacks before anything changes
            if self.facts:
                if not self.facts.http_tool:
                    raise DeployError("cannot check health_url on the VM: missing: none of "
                                      "curl, wget, python3 is installed on the VM",
                                      "install curl on the VM (or wget, or python3)")
            else:
                self.http_status(self.settings.health_url)

    def check_database_reach(self, tag: str, database_host: str, who: str = "") -> None:
        """From a one-off container of `tag` on this host (the app's own network and
        environment), connect to the Postgres its database URL names: a host that cannot
        reach it must not switch (its `/health` may pass while every query fails)."""
        s = self.settings
        if s.database != "postgres":
            return
        parts = s.database_env
        result = self.run(cmd.database_reach(self.compose(tag), s.service, s.database_url_env,
                                             parts.get("host", ""), parts.get("port", "")),
                          hide=True, check=False)
        if self.runner.dry_run:
            return
        state, detail = cmd.parse_reach(result.stdout)
        if state in ("ok", "none"):
            return
        detail = redact(detail if state == "failed" else
                        "\n".join(result.output.strip().splitlines()[-5:]) or
                        f"exit {result.exited}", self.runner.secrets)
        raise DeployError(
            f"{who or self.runner.where} cannot reach the database with {tag}: {detail}; "
            "nothing was switched",
            f"the app's database URL must name the database host ({database_host}) as every "
            "host reaches it, and that host must publish Postgres to the others "
            "(README: Where the database lives)")

    def check_sqlite_on_disk(self, config: dict) -> None:
        s = self.settings
        if s.database != "sqlite":
            return
        problem = contract.sqlite_mount_problem(config, s.service, s.app_dir, s.sqlite_path)
        if problem:
            raise DeployError(problem, contract.SQLITE_VOLUME_FIX)

    # -- images ---------------------------------------------------------------------------
    def pull(self, tag: str) -> str:
        """Pull IMAGE:TAG; its registry digest ('' in a dry run)."""
        ref = self.ref(tag)
        housekeeping.check_pull_space(self, tag)
        self.run(cmd.pull(ref), hide=True, what=f"the VM could not pull {ref}",
                 fix="check that the VM can reach the registry and is logged in (fab setup)")
        return self.inspect(tag)

    def pull_recorded(self, tag: str, digest: str) -> str:
        """Bring back exactly the image a release recorded: pull IMAGE@DIGEST and make
        IMAGE:TAG name it on the VM, whatever the tag points to in the registry now."""
        if not digest:
            return self.pull(tag)
        pinned = f"{self.image}@{digest}"
        housekeeping.check_pull_space(self, tag, digest)
        self.run(cmd.pull(pinned), hide=True, what=f"the VM could not pull {pinned}",
                 fix="the registry no longer has the image this release ran; pick another "
                     "release from `fab releases`")
        self.run(docker.tag(pinned, self.ref(tag)), quiet=True)
        self.inspect(tag)
        return digest

    def inspect(self, tag: str) -> str:
        out = self.run(docker.image_digests(self.ref(tag)), quiet=True).stdout
        self.pulled[tag], digest = docker.parse_image_digests(out, self.image)
        return digest

    # -- the database ---------------------------------------------------------------------
    def start_database(self, tag: str) -> None:
        """Postgres: start the database service (a first deploy has none running) and wait
        until it accepts connections."""
        s = self.settings
        if s.database != "postgres" or s.database_url:  # external: no host starts it
            return
        compose = self.compose(tag)
        self.run(cmd.start_service(compose, s.postgres_service), hide=True,
                 what=f"starting the database service {s.postgres_service} failed; nothing "
                      "was migrated or switched", fix="see the error above")
        ready = cmd.pg_ready(compose, s.postgres_service, s.postgres_user, s.postgres_db)
        if not self.wait_ready(lambda: self.run(ready, quiet=True, check=False).ok,
                               s.health_timeout, 0.5):
            raise DeployError(f"the database service {s.postgres_service} did not accept "
                              f"connections within {s.health_timeout:.0f}s (pg_isready); "
                              "nothing was migrated or switched",
                              f"look at `docker compose logs {s.postgres_service}` on the VM")

    def backup(self, tag: str, previous: str = "", revision: str = "", label: str = "",
               reason: str = "") -> str:
        """A backup of the database before it changes; its path under backups/ ('' if none).
        Its manifest (backups/NAME.json, 0600) says which app, database kind, `revision`, tag,
        size and sha256 it holds: `fab restore` takes back only what it finds there."""
        s = self.settings
        if s.database == "none" or s.database_url:  # external: its provider keeps backups
            return ""
        target = (f"{cmd.BACKUP_DIR}/{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{tag}"
                  f"{label}{BACKUP_EXT[s.database]}")
        if s.database == "sqlite":
            argv = cmd.backup_sqlite(s.sqlite_path, target)
        else:
            self.start_database(tag)
            argv = cmd.backup_postgres(self.compose(tag), s.postgres_service, s.postgres_user,
                                       s.postgres_db, target)
        housekeeping.check_backup_space(self, tag)
        result = self.run(argv, hide=True, check=False)
        if not result.ok:
            # the C library says "No space left on device"; Go programs (docker compose
            # writing pg_dump's output: `write /dev/stdout: no space left on device`) in lower case
            full = "no space left on device" in result.output.lower()
            tail = "\n".join(result.output.splitlines()[-15:])
            raise DeployError(
                "the database backup failed; nothing was migrated or switched\n" + tail,
                "free disk space on the VM (df -h), then deploy again" if full else
                "fix what the backup's error above says, then deploy again")
        lines = result.stdout.strip().splitlines() or [""]
        made = lines[0]
        if made == "no database yet" and previous:
            raise DeployError(
                f"there is no SQLite database at {s.app_dir}/{s.sqlite_path} on the VM though "
                f"{previous} is serving: nothing to back up; nothing was migrated or switched",
                "set sqlite_path to the file the app writes (under app_dir), or set database "
                "= \"none\" to deploy without backups")
        if not made.startswith(f"{cmd.BACKUP_DIR}/"):
            return ""
        size, _, sha256 = (lines[1] if len(lines) > 1 else "").partition(" ")
        manifest = self.manifests[made] = {
            "made_by": MANIFEST_MAKER, "name": made.removeprefix(f"{cmd.BACKUP_DIR}/"),
            "project": self.project, "database": s.database, "revision": revision,
            "tag": tag, "size": int(size) if size.isdigit() else -1, "sha256": sha256,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **({"reason": reason} if reason else {})}
        self.write(f"{made}.json", json.dumps(manifest, sort_keys=True))
        return made

    def check_backup(self, name: str, force_unverified: bool = False) -> dict:
        """Refuse, before anything changes, a backup this tool did not make for this app and
        database, or one that changed since (its manifest's size and sha256). Without a
        manifest (a file put there, or a backup of a version before manifests) only with
        `force_unverified`, and only if its first bytes are of the right kind. The manifest."""
        s = self.settings
        path = f"{cmd.BACKUP_DIR}/{name}"
        if s.database not in BACKUP_EXT:
            raise DeployError("database = \"none\" in deploy.toml: there is no database to "
                              "restore", "set database = \"sqlite\" or \"postgres\"")
        if s.database_url:
            raise DeployError("the database is external (database_url): the tool keeps no "
                              "backups of it to restore; nothing was changed",
                              "restore it with its provider's tools")
        if self.runner.dry_run:
            self.run(cmd.backup_info(name))
            return {}
        out = self.run(cmd.backup_info(name), quiet=True, what=f"cannot read {path} on the VM",
                       fix="pick one from `fab backups`").stdout.splitlines()
        raw, facts = (out + ["", ""])[:2]
        size, sha256, kind = (facts.split() + ["", "", ""])[:3]
        refused = f"refusing to restore {path}"
        pick = "pick a backup from `fab backups`"
        manifest: dict = {}
        if raw.strip() != "-":
            try:
                manifest = json.loads(raw)
            except json.JSONDecodeError:
                manifest = {}
            if not isinstance(manifest, dict) or manifest.get("made_by") != MANIFEST_MAKER:
                raise DeployError(f"{refused}: its manifest {path}.json is unreadable; nothing "
                                  "was changed", pick)
            problem = (
                f"it was made for the app {manifest.get('project')!r}, not this one "
                f"({self.project!r})" if manifest.get("project") != self.project else
                f"it is a {manifest.get('database')} backup; this app's database is "
                f"{s.database}" if manifest.get("database") != s.database else
                f"it changed since it was made (size {size}, sha256 {sha256[:12]}…; its "
                f"manifest says size {manifest.get('size')}, sha256 "
                f"{str(manifest.get('sha256'))[:12]}…)"
                if (size, sha256) != (str(manifest.get("size")), manifest.get("sha256")) else "")
            if problem:
                raise DeployError(f"{refused}: {problem}; nothing was changed", pick)
        elif not force_unverified:
            raise DeployError(
                f"{refused}: it has no manifest ({path}.json), so nothing says this tool made "
                f"it as a backup of this app's {s.database} database (a file put there, or a "
                "backup of a version before manifests); nothing was changed",
                f"{pick}; if you are sure it is this app's database, `fab restore "
                f"--backup={name} --force-unverified` restores it (the live database is saved "
                "first)")
        wanted = FILE_KIND[s.database]
        if kind != wanted:
            raise DeployError(f"{refused}: it is not {FILE_KIND_TEXT[wanted]} (its first bytes "
                              f"say {kind}); nothing was changed", pick)
        return manifest

    def prune_backups(self, history: list[dict]) -> None:
        """Keep the newest keep_backups backups of recorded releases, as many of failed
        attempts, and always the one taken before the last migration that succeeded."""
        doomed = backups_to_prune(self.backups(), history, self.settings.keep_backups)
        if doomed:
            self.run(cmd.remove_backups(doomed), quiet=True, check=False)

    def wait_for_leftovers(self) -> None:
        """Wait for one-off containers an interrupted deploy left running (its migration goes
        on without it): two migrations must never run at once. Once none runs, none can
        start while this deploy holds the lock: asked once per deploy."""
        if self.leftovers_settled:
            return
        if self.facts and not self.runner.dry_run:
            names = self.facts.oneoffs
        else:
            names = self.run(cmd.oneoff_containers(self.project), quiet=True,
                             check=False).stdout.split()
        self.leftovers_settled = bool(self.holder_json)  # under the lock only
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

        Returns the database's revision afterwards (`alembic current` in the same container,
        whatever the migrate command printed; '' if unknown). `backup` is named in the fix.
        """
        command = self.settings.migrate_command
        if not command:
            return ""
        self.wait_for_leftovers()
        name = backup.removeprefix(f"{cmd.BACKUP_DIR}/")
        result = self.run(
            cmd.run_in_new_container(self.compose(tag), self.settings.service,
                                     cmd.migrate_then_current(command),
                                     # the database service was started (not recreated)
                                     no_deps=self.settings.database == "postgres"),
            hide=True, check=False)
        self.before_migration = self.migrated_from(result.stdout, backup)
        if not result.ok:
            # the migration's own output: not the `alembic current` asked before it
            own = result.stdout.split(cmd.BEFORE_MARK)[-1] + result.stderr
            tail = redact("\n".join(own.strip().splitlines()[-15:]), self.runner.secrets)
            if self.settings.database == "sqlite" and BUSY in result.output:
                raise DeployError(
                    f"the migration with {tag} could not write: the SQLite database "
                    f"{self.settings.sqlite_path} was busy (`{BUSY}`: another process held "
                    "its write lock); the previous version is still serving\n" + tail,
                    "stop the process writing to it (a script, a `fab exec`, a second app), "
                    "or wait for it to finish, then deploy again")
            raise DeployError(
                f"migration with {tag} failed; the previous version is still serving\n" + tail,
                "fix the migration, push a new tag and deploy again"
                + (f"; if it changed the database before failing, `fab restore --backup={name}`"
                   " puts back the copy taken just before" if name else
                   " (fab backups lists the backup taken just before)"))
        after = result.stdout.split(cmd.REVISION_MARK, 1)
        return parse_revision(after[1]) if len(after) == 2 else ""

    def migrated_from(self, output: str, backup: str) -> str:
        """The revision the migration found (its `alembic current` before it ran; '' if
        unknown); `backup`'s manifest is corrected to it."""
        parts = output.split(cmd.BEFORE_MARK)
        before = parse_revision(parts[1]) if len(parts) >= 3 else ""
        made = self.manifests.get(backup)
        if before and made and made.get("revision") != before:
            made["revision"] = before
            self.write(f"{backup}.json", json.dumps(made, sort_keys=True))
        return before

    def downgrade(self, current: str, revision: str) -> None:
        self.run(cmd.run_in_new_container(self.compose(current), self.settings.service,
                                          f"{self.alembic} downgrade {revision}",
                                          no_deps=self.settings.database == "postgres"),
                 hide=True, what=f"{self.alembic} downgrade to {revision} failed; {current} still "
                 "serves", fix="look at the migration's downgrade() and the database")

    # -- the switch -----------------------------------------------------------------------
    def switch(self, tag: str) -> None:
        self.run(cmd.up(self.compose(tag)), hide=True,
                 what=f"`compose up` with {tag} failed", fix="see the output above")

    def wait_healthy(self, tag: str = "") -> str:
        """Wait for the service to turn healthy (or run steadily 3 s without a health check),
        then for health_url to answer 200 as seen from the VM; '' if so, else what was seen.
        The container is polled on the VM (one round trip for the whole wait)."""
        s = self.settings
        compose = self.compose(tag or None)
        wait = cmd.health_state_wait(compose, s.service, s.health_timeout, STEADY_POLLS)
        if self.runner.dry_run:
            self.run(wait)
            if s.health_url:
                self.run(cmd.http_status(s.health_url))
            return ""
        result = self.run(wait, quiet=True, check=False)
        state, image_id, reference = (result.stdout.split() + ["", "", ""])[:3]
        state = state or "missing"
        self.seen_running = (image_id, reference) if image_id else None
        if result.exited == cmd.HEALTH_TIMEOUT_EXIT:
            return f"timeout ({state})"
        if not result.ok:
            return (f"the health wait failed (exit {result.exited}): "
                    f"{(result.output.strip().splitlines() or [''])[-1]}")
        if state not in ("healthy", "running"):
            return state
        if s.health_url:
            status = {"code": ""}

            def answers() -> bool:
                status["code"] = self.http_status(s.health_url)
                return status["code"] == "200"

            if not self.wait_ready(answers, s.health_timeout, 0.25):
                code = status["code"]
                return f"{s.health_url} answered {code} on the VM" if code != "000" else \
                    f"nothing answered {s.health_url} on the VM"
        return ""

    def runs_pulled_image(self, tag: str, digest: str = "") -> str:
        """'' if the service's container runs the image pulled for `tag` (or, not pulled in
        this session, the recorded `digest`), else what runs."""
        expected = self.pulled.get(tag)
        if not expected and digest:
            found = self.run(docker.image_digests(f"{self.image}@{digest}"), quiet=True,
                             check=False)
            expected = found.stdout.split()[0] if found.ok and found.stdout.split() else ""
        if not expected:
            return ""
        # what the health wait saw the container run when it turned healthy, else ask
        image_id, reference = self.seen_running or self.running()
        self.seen_running = None
        if image_id == expected:
            return ""
        return (f"the app container runs {reference or 'nothing'} ({image_id[:19] or '-'}), "
                f"not the image pulled for {self.ref(tag)} ({expected[:19]})")

    def record(self, entry: dict) -> None:
        """Append `entry` to the history and write the release files for its tag (one round
        trip)."""
        if self.serving:  # behind the proxy: which container serves this release
            entry["container"] = self.serving
        line = json.dumps(entry, sort_keys=True)
        release, tail, override = self.release_texts(entry["tag"])
        self.run(cmd.record_release(line, release, tail, override), quiet=True,
                 what="could not record the release on the VM",
                 fix="check the disk (df -h); `fab status` shows what serves")
        self._current = entry["tag"]
        if self.facts:
            self.facts.history.append(line)


def backups_to_prune(names: list[str], history: list[dict], keep: int) -> list[str]:
    """Which backups go: of those recorded by a release, all but the newest `keep`; of the
    others (failed attempts), all but the newest `keep`; never the one taken before the last
    migration that succeeded."""
    recorded = {e.get("backup") for e in history if e.get("backup")}
    pinned = next((e.get("backup") for e in reversed(history) if e.get("migrated")), None)
    newest = sorted(names, reverse=True)
    released = [n for n in newest if n in recorded]
    attempts = [n for n in newest if n not in recorded]
    kept = set(released[:keep]) | set(attempts[:keep]) | {pinned}
    return [n for n in newest if n not in kept]
