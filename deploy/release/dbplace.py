"""Where the database lives, and the layouts that would split or share its data wrongly.

With `database = "postgres"` the database is either a compose service (`postgres_service`) on
one host, `database_host` (default: the primary: `host`; with roles, the primary role's first
host; with Swarm, the manager), or an external database no host starts (`database_url`, e.g.
a managed Postgres). `fab setup`, `fab deploy` and `inv deploy` check the compose files on the
laptop against that before any VM is contacted: a database service that more than one host
would start (each host its own empty database, the migration reaching one), and a Swarm stack
that carries the database the tool also starts with compose on the manager (two Postgres
servers on one data volume).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy.core.compose import read_compose
from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.release.roleplan import Role, make_plan, read_roles
from deploy.release.target import release_kind

PROFILE_FIX = ("put it under a profile there (`profiles: [\"database\"]`: the tool starts it by "
               "name on the database host only; a plain `up` leaves it out) and drop the app's "
               "`depends_on` on it")


def starts_service(path: Path, service: str) -> bool:
    """Whether `docker compose up` with the compose file at `path` starts `service`: it is
    defined there without a profile."""
    data = yaml.safe_load(read_compose(path))
    spec = data["services"].get(service)
    if spec is None:
        return False
    return not (isinstance(spec, dict) and spec.get("profiles"))


def database_host(settings: Settings, roles: list[Role]) -> str:
    """The host whose compose service runs the database ('' when it is external)."""
    if settings.database_url:
        return ""
    if settings.database_host:
        return settings.database_host
    if roles:
        return make_plan(roles, settings.primary_role, settings.batch_limit).primary.host
    return settings.host


def check(settings: Settings, use_roles: bool = True) -> None:
    """Refuse, before any VM is contacted, a layout that splits or doubles the database.
    `use_roles`: the `[roles.*]` plan applies (no `-H`)."""
    if settings.database != "postgres":
        return
    kind = release_kind(settings, use_roles)
    if kind == "swarm":
        check_swarm(settings)
    elif kind == "roles":
        check_roles(settings, read_roles(settings))
    elif settings.database_host and settings.database_host not in hosts_of(settings):
        raise DeployError(
            f"database_host {settings.database_host!r} is not the host deployed to "
            f"({settings.host or 'none set'}): the database service runs with the app, on that "
            "host; nothing was changed",
            "unset database_host (the database is then on `host`), or set database_url for a "
            "database elsewhere")
    elif settings.database_url:
        compose = settings.compose_file
        if starts_service(settings.path(compose), settings.postgres_service):
            raise DeployError(
                f"database_url says the database is external, but {compose} starts the "
                f"database service '{settings.postgres_service}' too: the app would have a "
                "second, empty database beside it; nothing was changed",
                f"remove '{settings.postgres_service}' from {compose}, or unset database_url "
                "to keep the database in compose on this host")


def hosts_of(settings: Settings) -> list[str]:
    """The hosts `host` names (comma-separated)."""
    return [h.strip() for h in settings.host.split(",") if h.strip()]


def check_roles(settings: Settings, roles: list[Role]) -> None:
    hosts = [h for role in roles for h in role.hosts]
    place = database_host(settings, roles)
    if settings.database_host and settings.database_host not in hosts:
        raise DeployError(
            f"database_host {settings.database_host!r} is none of the roles' hosts "
            f"({', '.join(hosts)}); nothing was changed",
            "set database_host to the host whose compose file runs the database (default: "
            "the primary role's first host)")
    service = settings.postgres_service
    starting = []  # (host, role, compose file) of each host that would start the database
    for role in roles:
        compose = role.compose_file or settings.compose_file
        if starts_service(settings.path(compose), service):
            starting += [(h, role.name, compose) for h in role.hosts]
    extra = [s for s in starting if s[0] != place]
    if not extra:
        return
    listed = ", ".join(f"{h} ([roles.{r}], {c})" for h, r, c in starting)
    if not place:
        raise DeployError(
            f"database_url says the database is external, but the database service "
            f"'{service}' would start on {listed}: each host would get its own empty database; "
            "nothing was changed",
            f"remove '{service}' from those compose files, or {PROFILE_FIX}")
    compose_files = sorted({c for _, _, c in extra})
    raise DeployError(
        f"the database service '{service}' would start on {len(starting)} hosts: {listed}; "
        f"each would get its own empty database, and the migration reaches only {place}'s; "
        "nothing was changed",
        f"run it on {place} only: give the other roles a compose file without '{service}' "
        f"(`compose_file` in their [roles.NAME]), or in {', '.join(compose_files)} "
        f"{PROFILE_FIX}; the app's database URL (in .env) then names {place}, which every "
        "host must reach")


def check_swarm(settings: Settings) -> None:
    service = settings.postgres_service
    if settings.database_host and settings.database_host != settings.host:
        raise DeployError(
            f"database_host {settings.database_host!r} is not the swarm manager "
            f"({settings.host}): with target = \"swarm\" the tool starts the database with "
            "compose on the manager; nothing was changed",
            "unset database_host, or keep the database outside the swarm: database_url = "
            "\"postgresql://...\"")
    if settings.database_url:
        return
    compose = settings.compose_file
    if starts_service(settings.path(compose), service):
        raise DeployError(
            f"the stack's compose file {compose} also carries the database service "
            f"'{service}', which the tool starts with compose on the manager for backups and "
            "migrations: two Postgres servers would run on one data volume; nothing was changed",
            f"keep '{service}' out of the stack: {PROFILE_FIX.replace('database host', 'manager')}"
            " (the stack then leaves it out), or run the database outside the swarm and set "
            "database_url")
