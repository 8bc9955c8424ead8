"""Where the database lives: `database_host` / `database_url`, and the layouts `fab setup`,
`fab deploy` and `inv deploy` refuse before any VM is contacted (a database service that
several hosts of a roles plan would start; a Swarm stack that carries the database the tool
also starts with compose on the manager). Hosts are `.invalid`: nothing here can connect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_traceback, child_env, output

from deploy.core.settings import load_settings
from deploy.release.roles import Slot, make_plan, parse_roles

DB = """\
  db:
    image: postgres:17
    environment:
      POSTGRES_PASSWORD: x
    volumes: ["pgdata:/var/lib/postgresql/data"]
"""
APP = "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n"
WITH_DB = APP + DB + "volumes:\n  pgdata:\n"
PROFILED_DB = APP + DB.replace("  db:\n", "  db:\n    profiles: [\"database\"]\n") + \
    "volumes:\n  pgdata:\n"


def fab(repo: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=repo,
                          env=child_env(env), capture_output=True, text=True, timeout=120,
                          check=False)


def app_repo(tmp_path: Path, settings: str, compose: str = WITH_DB,
             files: dict[str, str] | None = None) -> Path:
    repo = tmp_path / "app"
    repo.mkdir(parents=True)
    (repo / "fabfile.py").write_text("from deploy.cli.fabtasks import ns  # noqa: F401\n")
    (repo / "compose.yaml").write_text(compose)
    (repo / ".env").write_text("APP_SECRET=x\n")
    for name, text in (files or {}).items():
        (repo / name).write_text(text)
    (repo / "deploy.toml").write_text(
        'image = "127.0.0.1:5000/dbapp"\nuser = "root"\ndatabase = "postgres"\n' + settings)
    return repo


ROLES = ('[roles.web]\nhosts = ["web1.invalid", "web2.invalid"]\n'
         '[roles.worker]\nhosts = ["job1.invalid"]\nkind = "worker"\n'
         'compose_file = "compose.worker.yaml"\n')
WORKER = "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n"


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    text = output(proc)
    assert proc.returncode == 1, text
    assert_no_traceback(proc)
    assert "invalid" not in text.split("error:", 1)[0], text  # nothing ran before the refusal
    return text


# -- roles: one database service, on one host ------------------------------------------------
@pytest.mark.parametrize("command", [["setup"], ["deploy", "--tag=v2", "--dry-run"]])
def test_a_database_service_on_every_web_host_is_refused(tmp_path, command) -> None:
    """The example's compose file for the web role (two hosts): each would start its own
    Postgres and only the primary's would be migrated."""
    repo = app_repo(tmp_path, ROLES, files={"compose.worker.yaml": WORKER})
    text = refused(fab(repo, *command))
    assert ("error: the database service 'db' would start on 2 hosts: web1.invalid "
            "([roles.web], compose.yaml), web2.invalid ([roles.web], compose.yaml); each would "
            "get its own empty database, and the migration reaches only web1.invalid's; nothing "
            "was changed") in text, text
    assert "fix: run it on web1.invalid only: give the other roles a compose file without 'db'" \
        in text
    assert "profiles: [\"database\"]" in text
    assert "docker" not in text  # no command was printed, not even in the dry run


def test_the_database_on_the_primary_only_passes_and_database_host_moves_the_migration(
        tmp_path) -> None:
    """The same plan with the database under a profile (started by name on its host only)
    goes ahead; with database_host the backup and migration run on that host."""
    repo = app_repo(tmp_path, ROLES, compose=PROFILED_DB,
                    files={"compose.worker.yaml": WORKER})
    proc = fab(repo, "deploy", "--tag=v2", "--dry-run")
    assert proc.returncode == 0, output(proc)

    repo2 = app_repo(tmp_path / "two", 'database_host = "job1.invalid"\n' + ROLES,
                     files={"compose.worker.yaml": WORKER + DB + "volumes:\n  pgdata:\n"},
                     compose=APP)
    proc = fab(repo2, "deploy", "--tag=v2", "--dry-run")
    text = output(proc)
    assert proc.returncode == 0, text
    migrations = [line for line in text.splitlines() if "alembic upgrade head" in line]
    assert len(migrations) == 1 and "job1.invalid" in migrations[0], text
    assert "migrated once, on job1.invalid (worker)" in text, text


def test_database_host_must_be_a_host_of_the_plan(tmp_path) -> None:
    repo = app_repo(tmp_path, 'database_host = "db9.invalid"\n' + ROLES, compose=PROFILED_DB,
                    files={"compose.worker.yaml": WORKER})
    text = refused(fab(repo, "setup"))
    assert "error: database_host 'db9.invalid' is none of the roles' hosts (web1.invalid, " \
        "web2.invalid, job1.invalid); nothing was changed" in text, text


def test_the_plan_puts_the_database_host_first() -> None:
    roles = parse_roles({"web": {"hosts": ["a", "b"]}, "worker": {"hosts": ["c"],
                                                                    "kind": "worker"}})
    plan = make_plan(roles, "web", 1, database_host="b")
    assert plan.primary == Slot("web", "b")
    assert [s.host for s in plan.slots] == ["b", "a", "c"]
    assert make_plan(roles, "web", 0, database_host="c").primary == Slot("worker", "c")
    assert make_plan(roles, "web", 0).primary == Slot("web", "a")


# -- Swarm: the stack must not carry the database the tool starts with compose ---------------
SWARM = 'host = "manager.invalid"\ntarget = "swarm"\nstack = "shop"\n'


@pytest.mark.parametrize("command", [["setup"], ["deploy", "--tag=v2", "--dry-run"]])
def test_a_stack_that_carries_the_database_is_refused(tmp_path, command) -> None:
    repo = app_repo(tmp_path, SWARM)
    text = refused(fab(repo, *command))
    assert ("error: the stack's compose file compose.yaml also carries the database service "
            "'db', which the tool starts with compose on the manager for backups and "
            "migrations: two Postgres servers would run on one data volume; nothing was "
            "changed") in text, text
    assert "fix: keep 'db' out of the stack" in text and "database_url" in text
    assert "docker" not in text


def test_a_stack_without_the_database_goes_ahead(tmp_path) -> None:
    for settings, compose in ((SWARM, PROFILED_DB),
                              (SWARM + 'database_url = "postgresql://app:s3cret-pw@db.example'
                                       '.com:5432/app"\n', WITH_DB)):
        repo = app_repo(tmp_path / str(len(compose)), settings, compose=compose)
        proc = fab(repo, "deploy", "--tag=v2", "--dry-run")
        assert proc.returncode == 0, output(proc)
        assert "s3cret-pw" not in output(proc)


# -- an external database --------------------------------------------------------------------
EXTERNAL = 'database_url = "postgresql://app:s3cret-pw@db.example.com:5432/app"\n'


def test_an_external_database_with_a_compose_database_beside_it_is_refused(tmp_path) -> None:
    repo = app_repo(tmp_path, 'host = "vm.invalid"\n' + EXTERNAL)
    text = refused(fab(repo, "setup"))
    assert ("error: database_url says the database is external, but compose.yaml starts the "
            "database service 'db' too") in text, text
    assert "s3cret-pw" not in text
    roles_repo = app_repo(tmp_path / "roles", EXTERNAL + ROLES,
                          files={"compose.worker.yaml": WORKER})
    text = refused(fab(roles_repo, "deploy", "--tag=v2", "--dry-run"))
    assert "error: database_url says the database is external, but the database service 'db' " \
        "would start on web1.invalid ([roles.web], compose.yaml), web2.invalid" in text, text


@pytest.mark.parametrize(("settings", "message"), [
    ('database_url = "mysql://a:b@h/db"\n', "must be a Postgres URL"),
    ('database_url = "postgresql://a:b@h:5432/"\n', "it names no database"),
    (EXTERNAL + 'database_host = "vm1"\n', "both say where the database lives"),
])
def test_bad_database_places_are_refused_when_the_settings_are_read(tmp_path, settings,
                                                                    message) -> None:
    repo = app_repo(tmp_path, settings)
    with pytest.raises(Exception) as caught:
        load_settings(repo, environ={})
    assert message in str(caught.value)
    assert "s3cret-pw" not in str(caught.value) and ":b@" not in str(caught.value)


def test_database_host_on_one_host_must_be_that_host(tmp_path) -> None:
    repo = app_repo(tmp_path, 'host = "vm.invalid"\ndatabase_host = "other.invalid"\n')
    text = refused(fab(repo, "setup"))
    assert "error: database_host 'other.invalid' is not the host deployed to (vm.invalid)" \
        in text, text
    ok = app_repo(tmp_path / "ok", 'host = "vm.invalid"\ndatabase_host = "vm.invalid"\n')
    assert fab(ok, "deploy", "--tag=v2", "--dry-run").returncode == 0
