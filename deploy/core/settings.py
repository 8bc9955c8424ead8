"""Settings: one typed place, read by both `inv` and `fab`.

Sources, later ones win: defaults, `deploy.toml` in the app repo, `DEPLOY_<KEY>` lines of the
app's `.env` file, then `DEPLOY_<KEY>` environment variables. Unknown keys and bad values are
rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from deploy.core import destinations, settingsrules
from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.settingsfile import ENV_PREFIX, SETTINGS_FILE, read_settings_file

# DEPLOY_* variables that belong to other parts of the toolkit, not to the settings.
FOREIGN_ENV = ("DEPLOY_SANDBOX_",)
SECRET_KEYS = frozenset({"registry_password", "test_database_url", "database_url"})
ENV_BOOLS = {"true": True, "1": True, "false": False, "0": False}
CHOICES: dict[str, tuple[str, ...]] = {
    "database": ("sqlite", "postgres", "none"),
    "lock_backend": ("pip-tools", "uv", "auto"),
    "compose_command": ("auto", "v2", "v1"),
    "lock_kind": ("auto", "requirements", "uv", "poetry"),
    "target": ("compose", "swarm"),
    "proxy_tls": ("auto", "internal", "off"),
}
DATABASE_PARTS = ("host", "port", "user", "password", "name")
# Tables read by their own module, not typed settings (`[roles.NAME]`, deploy/release/roles.py).
TABLES = ("roles", "destinations", "secrets", "aliases")


@dataclass(frozen=True)
class Settings:
    """Everything a user may change per project. Paths are relative to `root`."""

    root: Path = field(default_factory=Path.cwd, metadata={"internal": True})
    # Output: every command as it runs (`-v`/`--echo` set DEPLOY_VERBOSE=1)
    verbose: bool = False
    # Image and build
    image: str = ""
    tag: str = ""
    platform: str = "linux/amd64"
    dockerfile: str = "Dockerfile"
    context: str = "."
    smoke_command: str = "python -c \"from app.main import app; print('OK')\""
    app_port: int = 8000
    health_path: str = "/health"
    boot_timeout: float = 60.0
    smoke_env_file: str = ""
    # The app's own environment (where its code runs on the laptop): empty = detect
    app_python: str = ""
    test_command: str = ""
    test_dir: str = ""
    # Dependencies
    requirements: str = "requirements.txt"
    lock_file: str = "requirements.lock"
    lock_backend: str = "pip-tools"
    lock_kind: str = "auto"
    generate_hashes: bool = True
    # Preflight
    env_file: str = ".env"
    env_example: str = ".env.example"
    alembic_ini: str = "alembic.ini"
    check_database_url: str = ""
    # The database `inv test` and `inv deploy`'s tests may use instead of a throwaway one
    test_database_url: str = ""
    database_url_env: str = "DATABASE_URL"
    # Or the variables the app builds its URL from: {host = "POSTGRES_SERVER", port = ..., user
    # = ..., password = ..., name = ...} (keys DATABASE_PARTS); then database_url_env is unused
    database_env: dict[str, str] = field(default_factory=dict)
    # Registry
    registry_user: str = ""
    registry_password: str = ""
    # The VM
    host: str = ""
    port: int = 22
    user: str = ""
    key_file: str = ""
    known_hosts: str = ""
    connect_timeout: float = 15.0
    network_timeout: float = 30.0  # a VM silent this long (SSH keepalives unanswered) is lost
    lock_lease: float = 120.0  # a deploy lock not renewed this long may be cleared
    app_dir: str = "/srv/app"
    compose_file: str = "compose.yaml"
    compose_command: str = "auto"
    project_name: str = ""  # default: app_dir's name plus a hash of the whole path
    image_variable: str = "DEPLOY_IMAGE"  # the compose variables that carry the release
    tag_variable: str = "DEPLOY_TAG"
    service: str = "app"
    migrate_command: str = "alembic upgrade head"
    health_url: str = ""
    health_timeout: float = 60.0
    rollback_on_failure: bool = True
    database: str = "sqlite"
    sqlite_path: str = "data/app.db"
    postgres_service: str = "db"
    # Where the Postgres database lives (deploy/release/dbplace.py): the compose service on
    # this host (default: the primary), or an external database no host starts (e.g. managed
    # Postgres)
    database_host: str = ""
    database_url: str = ""
    postgres_user: str = "postgres"
    postgres_db: str = "app"
    keep_backups: int = 5
    # Housekeeping: the images of the newest keep_releases releases stay on the VM (a rollback
    # to them pulls nothing), older ones go after a deploy; a pull or a backup is refused
    # unless it leaves disk_headroom_mb free
    keep_releases: int = 5
    disk_headroom_mb: int = 256
    # The proxy (Caddy) in front of the app: zero-downtime blue/green switches
    proxy: bool = False
    proxy_host: str = ""
    proxy_tls: str = "auto"
    proxy_email: str = ""
    proxy_dir: str = "/srv/.deploy-proxy"
    proxy_network: str = "deploy-proxy"
    proxy_image: str = "caddy:2"
    proxy_http_port: str = "80"
    proxy_https_port: str = "443"
    # Maintenance mode behind the proxy (deploy/release/maintenance.py): the 503 page and its header
    maintenance_page: str = ""  # an HTML file of the app repo; empty: the toolkit's own page
    maintenance_retry_after: int = 30  # seconds, the Retry-After header of the 503
    # Several hosts: [roles.NAME] tables (deploy/release/roles.py) and how they switch
    primary_role: str = ""
    batch_limit: int = 0
    batch_wait: float = 0.0
    rollback_all_on_failure: bool = False
    # The engine: compose (per host) or a Docker Swarm stack (deploy/release/swarm.py)
    target: str = "compose"
    stack: str = ""
    swarm_timeout: float = 180.0
    # Hosts (`[user@]host[:port]`, comma-separated) `fab setup` joins to the manager's swarm
    # as workers
    swarm_workers: str = ""
    # The app repo's hooks, run on the laptop around a release (deploy/local/hooks.py)
    hooks_dir: str = ".deploy/hooks"
    # Which [destinations.NAME] table is merged over the rest (deploy/core/destinations.py)
    destination: str = ""

    def path(self, relative: str) -> Path:
        """A settings path resolved against the app repo (with `~` expanded)."""
        return (self.root / Path(relative).expanduser()).resolve()

    def require(self, key: str) -> Any:
        """The value of `key`, or a clear error when it is empty."""
        value = getattr(self, key)
        if value in ("", None):
            raise DeployError(
                f"setting '{key}' is not set",
                f"add `{key} = ...` to {SETTINGS_FILE} or set {ENV_PREFIX}{key.upper()}",
            )
        return value

    def redacted(self) -> dict[str, Any]:
        """The effective settings, secrets replaced by '***'."""
        out: dict[str, Any] = {}
        for f in user_fields():
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in SECRET_KEYS and value else value
        return out

    @property
    def secrets(self) -> list[str]:
        """Secret values, for redaction of printed commands and output."""
        return [getattr(self, k) for k in SECRET_KEYS if getattr(self, k)]


def user_fields() -> list[dataclasses.Field]:
    return [f for f in fields(Settings) if not f.metadata.get("internal")]


FIELD_TYPES = {f.name: str(f.type) for f in user_fields()}  # the annotations' text: "int"


def _unknown_key(key: str, source: str) -> DeployError:
    close = difflib.get_close_matches(key, FIELD_TYPES, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(FIELD_TYPES)}"
    return DeployError(f"unknown setting '{key}' in {source}", hint)


def coerce(key: str, value: Any, source: str, text: bool = False) -> Any:
    """Turn a raw value (TOML value, or with `text` an environment string) into the key's
    type."""
    kind = FIELD_TYPES[key]
    bad = DeployError(
        f"setting '{key}' in {source} must be {_kind_name(kind)}, got {value!r}",
        f"fix the value of '{key}' in {source}",
    )
    if kind == "bool":
        # TOML's own booleans; an environment string exactly true/false/1/0 (a quoted "yes"
        # in deploy.toml is a string, not a yes)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and text and value in ENV_BOOLS:
            return ENV_BOOLS[value]
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad from None
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == "dict[str, str]":
        return database_parts(key, value, source, bad)
    if not isinstance(value, str):
        raise bad
    if key in CHOICES and value not in CHOICES[key]:
        raise DeployError(
            f"setting '{key}' in {source} must be one of {', '.join(CHOICES[key])}, got {value!r}",
            f"fix the value of '{key}' in {source}",
        )
    return value


def database_parts(key: str, value: Any, source: str, bad: DeployError) -> dict[str, str]:
    """A table of DATABASE_PARTS -> variable names (in the environment: `host=VAR,port=VAR`)."""
    if isinstance(value, str):
        value = dict(item.strip().partition("=")[::2] for item in value.split(",") if item.strip())
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad
    unknown = [k for k in value if k not in DATABASE_PARTS]
    names = [v for v in value.values() if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)]
    if unknown or names or (value and not {"host", "name"} <= set(value)):
        raise DeployError(
            f"setting '{key}' in {source} must map {', '.join(DATABASE_PARTS)} to variable "
            f"names (host and name at least), got {value!r}",
            f'fix it, e.g. {key} = {{host = "POSTGRES_SERVER", port = "POSTGRES_PORT", '
            'user = "POSTGRES_USER", password = "POSTGRES_PASSWORD", name = "POSTGRES_DB"}')
    return dict(value)


def _kind_name(kind: str) -> str:
    return {"bool": "true or false (in the environment also 1 or 0)", "int": "a whole number",
            "float": "a number", "dict[str, str]": "a table of variable names"}.get(
        kind, "a string")


def _env_overrides(env: dict[str, str], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(FOREIGN_ENV):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in FIELD_TYPES:
            raise _unknown_key(key, f"{source} ({name})")
        out[key] = coerce(key, value, f"{source} ({name})", text=True)
    return out


def find_root(start: Path | None = None) -> Path | None:
    """The app's project root: the nearest directory from `start` up that holds deploy.toml."""
    start = (start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / SETTINGS_FILE).is_file():
            return d
    return None


def require_root(start: Path | None = None) -> Path:
    """The project root, or a clear refusal when there is no deploy.toml here or above."""
    root = find_root(start)
    if root is None:
        here = (start or Path.cwd()).resolve()
        raise DeployError(
            f"no {SETTINGS_FILE} in {here} or any directory above it",
            "run this in the app's repo; to adopt an app, run `inv init` at its root",
        )
    return root


def load_settings(
    root: Path | str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read the effective settings for the app repo at `root` (default: the nearest directory
    from the working directory up that holds deploy.toml, else the working directory)."""
    root = Path(root or find_root() or Path.cwd()).resolve()
    environ = dict(os.environ if environ is None else environ)
    path = root / SETTINGS_FILE
    values: dict[str, Any] = {}
    raw_file = read_settings_file(path)
    for key, raw in raw_file.items():
        if key in TABLES:
            continue
        if key not in FIELD_TYPES:
            raise _unknown_key(key, SETTINGS_FILE)
        values[key] = coerce(key, raw, SETTINGS_FILE)
    sources = dict.fromkeys(values, SETTINGS_FILE)
    env_values = _env_overrides(environ, "the environment")
    # [destinations.NAME] over the top level
    name, own = destinations.chosen_table(root, raw_file, environ, Settings.env_file,
                                          Settings.app_dir)
    if name:
        source = destinations.source(name)
        for key, value in own.items():
            if key == "destination" or key not in FIELD_TYPES:
                raise _unknown_key(key, source)
            values[key] = coerce(key, value, source)
        values["destination"] = name
    env_file = env_values.get("env_file", values.get("env_file", Settings.env_file))
    dotenv_path = root / env_file
    if dotenv_path.exists():
        from_dotenv = _env_overrides(read_env_file(dotenv_path), env_file)
        values.update(from_dotenv)
        sources.update({k: f"{env_file} ({ENV_PREFIX}{k.upper()})" for k in from_dotenv})
    values.update(env_values)
    sources.update({k: f"the environment ({ENV_PREFIX}{k.upper()})" for k in env_values})
    settings = Settings(root=root, **values)
    _check_ranges(settings, sources, raw_file.get("roles"))
    return settings


def _check_ranges(settings: Settings, sources: dict[str, str], roles: Any) -> None:
    vm_hosts = [settingsrules.host_name(h) for h in f"{settings.host},{settings.swarm_workers}"
                .split(",") if h.strip()]
    if isinstance(roles, dict):
        for table in roles.values():
            hosts = table.get("hosts") if isinstance(table, dict) else None
            if isinstance(hosts, list):
                vm_hosts += [settingsrules.host_name(h) for h in hosts if isinstance(h, str)]
    effective = {f.name: getattr(settings, f.name) for f in user_fields()}
    settingsrules.check(effective, lambda key: sources.get(key, "the defaults"), vm_hosts)
