"""Destinations: `[destinations.NAME]` tables of deploy.toml merged over the rest of it.

```toml
host = "prod.example.com"          # the base: what every destination shares

[destinations.staging]
host = "staging.example.com"
app_dir = "/srv/app-staging"
env_file = ".env.staging"          # what `fab setup` uploads as app.env there
[destinations.staging.secrets]     # merged over [secrets] (deploy/local/secrets.py)
APP_SECRET = "pass show app/staging-secret"
```

One destination is chosen for a whole command by `DEPLOY_DESTINATION=NAME` in the environment
(or in the base env file, or `destination = "NAME"` in deploy.toml as the default). Its table
goes over deploy.toml's top level; `DEPLOY_<KEY>` lines of the env file and variables of the
environment still win over both. Every task (`inv` and `fab`) reads the settings this way, so
hosts, `app_dir`, env files and secrets, and with them the VM's deploy lock and release history
(kept in `app_dir`), are the destination's own. Two destinations on the same host and
`app_dir` are refused: they would share one lock and one history.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.settingsfile import ENV_PREFIX, SETTINGS_FILE, read_settings_file

TABLE = "destinations"
ENV_NAME = f"{ENV_PREFIX}DESTINATION"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Tables a destination may hold besides settings (read by their own modules).
SUBTABLES = ("secrets", "aliases")


def all_tables(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every [destinations.NAME] table of a parsed deploy.toml, checked."""
    tables = raw.get(TABLE, {})
    if not isinstance(tables, dict):
        raise DeployError(f"'{TABLE}' in {SETTINGS_FILE} must be tables "
                          "([destinations.NAME])", f"write [{TABLE}.staging] and so on")
    for name, table in tables.items():
        if not NAME_RE.match(name):
            raise DeployError(f"'{name}' is not a destination name ([{TABLE}.{name}])",
                              "use lower-case letters, digits, - and _")
        if not isinstance(table, dict):
            raise DeployError(f"'{TABLE}.{name}' in {SETTINGS_FILE} must be a table",
                              f"write [{TABLE}.{name}] with settings under it")
    return tables


def table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """The table of destination `name` ({} for none), or a refusal naming the known ones."""
    if not name:
        return {}
    tables = all_tables(raw)
    if name not in tables:
        known = ", ".join(tables) or "none"
        raise DeployError(f"there is no destination '{name}' in {SETTINGS_FILE} "
                          f"(known: {known})",
                          f"add a [{TABLE}.{name}] table, or set {ENV_NAME} to one of them")
    return tables[name]


def chosen(raw: dict[str, Any], environ: dict[str, str], root: Path,
           default_env_file: str) -> str:
    """The destination's name: the environment's, else the base env file's, else
    deploy.toml's `destination`."""
    if environ.get(ENV_NAME):
        return environ[ENV_NAME]
    env_file = environ.get(f"{ENV_PREFIX}ENV_FILE") or raw.get("env_file") or default_env_file
    path = root / str(env_file)
    if path.is_file():
        name = read_env_file(path).get(ENV_NAME, "")
        if name:
            return name
    return str(raw.get("destination", "") or "")


def chosen_table(root: Path, raw: dict[str, Any], environ: dict[str, str],
                 default_env_file: str, default_app_dir: str) -> tuple[str, dict[str, Any]]:
    """The chosen destination's name ('' for none) and its settings, raw (the settings
    coerce them, naming `source(name)`): its sub-tables left out, one that deploys where
    another does refused."""
    name = chosen(raw, environ, root, default_env_file)
    if not name:
        return "", {}
    own = {k: v for k, v in table(raw, name).items() if k not in SUBTABLES}
    refuse_shared_state(raw, name, default_app_dir)
    return name, own


def source(name: str) -> str:
    """Where a destination's settings come from, as messages name it."""
    return f"[{TABLE}.{name}] of {SETTINGS_FILE}"


def place(raw: dict[str, Any], name: str, default_app_dir: str) -> tuple[str, str]:
    """(host, app_dir) a destination deploys to, as deploy.toml says."""
    t = table(raw, name)
    return (str(t.get("host", raw.get("host", ""))),
            str(t.get("app_dir", raw.get("app_dir", default_app_dir))))


def refuse_shared_state(raw: dict[str, Any], name: str, default_app_dir: str) -> None:
    """Refuse a destination that deploys where another one does (one lock, one history)."""
    mine = place(raw, name, default_app_dir)
    for other in all_tables(raw):
        if other != name and place(raw, other, default_app_dir) == mine:
            raise DeployError(
                f"destinations '{name}' and '{other}' both deploy to {mine[1]} on "
                f"{mine[0] or 'the same host'}: they would share one deploy lock and one "
                "release history",
                f"give [{TABLE}.{name}] its own host or app_dir")


def subtable(root: Path, destination: str, key: str) -> dict[str, Any]:
    """deploy.toml's top-level table `key` with the destination's own `key` table over it
    (e.g. [secrets] and [destinations.staging.secrets])."""
    raw = read_settings_file(root / SETTINGS_FILE)
    base = raw.get(key, {})
    own = table(raw, destination).get(key, {})
    for where, value in ((f"[{key}]", base), (f"[{TABLE}.{destination}.{key}]", own)):
        if not isinstance(value, dict):
            raise DeployError(f"{where} in {SETTINGS_FILE} must be a table",
                              f"write it as a [{key}] table of NAME = \"...\" lines")
    return {**base, **own}
