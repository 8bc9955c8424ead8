"""The roles' model, with no VM: `[roles.NAME]` tables parsed and checked, the primary role,
the plan of batches a deploy switches in, what goes back when a batch fails, and each host's
settings. deploy/release/roles.py runs the plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from deploy.core.errors import DeployError
from deploy.core.settings import SETTINGS_FILE, Settings
from deploy.core.settingsfile import read_settings_file

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
    roles: list[Role] = []
    seen: dict[str, str] = {}  # host -> its role
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


def make_plan(roles: list[Role], primary: str = "", limit: int = 0,
              database_host: str = "") -> Plan:
    """The primary role first, then the others in the order written; each role's hosts in
    batches of `limit` (0: all of a role's hosts at once). A batch never mixes roles. With
    `database_host` (where the database service runs), its role is the primary one and the
    host its first: the backup and the migration run there."""
    if limit < 0:
        raise _bad(f"batch_limit must be 0 (all hosts of a role at once) or more, got {limit}",
                   f"fix batch_limit in {SETTINGS_FILE}")
    holder = next((r for r in roles if database_host in r.hosts), None) \
        if database_host else None
    first = holder or primary_role(roles, primary)
    batches: list[tuple[Slot, ...]] = []
    for role in [first, *(r for r in roles if r is not first)]:
        hosts = sorted(role.hosts, key=lambda h: h != database_host)  # stable: the rest as written
        slots = [Slot(role.name, h) for h in hosts]
        size = limit or len(slots)
        batches += [tuple(slots[i:i + size]) for i in range(0, len(slots), size)]
    return Plan(batches[0][0], tuple(batches))


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


def plan_of(settings: Settings) -> Plan:
    return make_plan(read_roles(settings), settings.primary_role, settings.batch_limit,
                     database_place(settings))


def database_place(settings: Settings) -> str:
    """`database_host` when the database is a compose service there ('' otherwise)."""
    return settings.database_host if settings.database == "postgres" \
        and not settings.database_url else ""
