"""Which database the app's tests get (`inv test`, `inv deploy`'s test step): never the
developer's own by accident.

By default, when the app has a database (`database` = postgres or sqlite), a throwaway one of
the production kind (deploy.local.scratchdb), migrated to head, reaches the tests through the
variables the app reads its database from (`database_url_env`, or `database_env`'s parts).
That only protects a database named in `.env`, or one listening on the laptop, when the
scratch one replaces it; when it cannot be sure of that, it refuses, unless the user names the
database the tests may use (`test_database_url`).
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.local import apppython
from deploy.local.codevars import SKIP_DIRS, EnvRead, app_env_reads, dotenv_overrides, file_reads

# SQLAlchemy URLs of SQL databases (`postgresql+psycopg://`, `sqlite:///`, `mysql://`, ...)
DATABASE_URL_RE = re.compile(
    r"^(postgres|postgresql|sqlite|mysql|mariadb|mssql|oracle|cockroachdb)(\+[\w.-]+)?://",
    re.I)
# Where a developer's own database listens on the laptop by default
LOCAL_PORTS = {5432: "Postgres", 3306: "MySQL"}
LOOPBACK = ("localhost", "127.0.0.1", "::1", "")
NAME_IT = ("name the database the tests may use: test_database_url = \"...\" in deploy.toml "
           "(it then gets {var}; nothing else is started)")


@dataclass(frozen=True)
class Plan:
    """The tests' database: a scratch one, the one the user named, or none."""

    kind: str  # "scratch", "named" or "none"
    why: str = ""  # for "none": why no database is given


def shown(url: str) -> str:
    """A database URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(
        netloc=f"{parts.username}:***@{netloc[-1]}"))


def env_database_urls(settings: Settings) -> dict[str, str]:
    """The variables of the app's `.env` (`env_file`) whose value is a database URL."""
    path = settings.path(settings.env_file)
    if not path.is_file():
        return {}
    return {k: v for k, v in read_env_file(path).items() if DATABASE_URL_RE.match(v or "")}


def url_variables(settings: Settings) -> list[str]:
    """The variables a scratch database reaches the app through."""
    if settings.database_env and settings.database == "postgres":
        return list(settings.database_env.values())
    return [settings.database_url_env]


def code_reads(settings: Settings) -> set[str]:
    """The variables the app's code, its Alembic env.py and its tests read (upper case)."""
    reads: list[EnvRead] = list(app_env_reads(settings.path(settings.context)))
    ini = settings.path(settings.alembic_ini)
    script_dir = apppython.alembic_script_dir(ini) if ini.exists() else None
    if script_dir and (script_dir / "env.py").exists():
        reads += file_reads(script_dir / "env.py", script_dir)
    root = settings.path(settings.test_dir or ".")
    skipped = SKIP_DIRS - {"tests", "test"}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skipped and not d.startswith("."))
        in_tests = bool({"tests", "test"} & set(Path(folder).relative_to(root).parts))
        for file in sorted(files):
            if file.endswith(".py") and (in_tests or file == "conftest.py"
                                         or file.startswith("test_")):
                reads += file_reads(Path(folder) / file, root)
    return {r.name.upper() for r in reads}


def reachable(urls: dict[str, str]) -> list[str]:
    """Databases listening on the laptop: the default ports, and the loopback ports the URLs
    name; each as `127.0.0.1:PORT (what)`. A TCP connect only, closed at once: no login."""
    ports = dict(LOCAL_PORTS)
    for url in urls.values():
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            continue
        if (parts.hostname or "") in LOOPBACK and port:
            ports.setdefault(port, "named in .env")
    found = []
    for port, what in sorted(ports.items()):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.3)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                found.append(f"127.0.0.1:{port} ({what})")
    return found


def plan(settings: Settings, db: bool) -> Plan:
    """Which database the tests get; refuses when a database the user did not name for the
    tests could be the one they reach. `db`: `inv test --db` (a scratch database is wanted
    even for an app without one, and only if the code reads its variable)."""
    if settings.test_database_url:
        return Plan("named")
    env_file = settings.env_file
    urls = env_database_urls(settings)
    named = ", ".join(f"{k} ({shown(v)})" for k, v in sorted(urls.items()))
    variables = url_variables(settings)
    if settings.database == "none" and not db:
        if urls:
            raise DeployError(
                f"{env_file} names a database ({named}) and deploy.toml says database = "
                "\"none\": the tests would reach it, and no throwaway database replaces it",
                "set database = \"postgres\" or \"sqlite\" (the tests then get a throwaway one), "
                f"or {NAME_IT.format(var=settings.database_url_env)}")
        return Plan("none", "database = \"none\"")
    read = code_reads(settings)
    unread = [v for v in variables if v.upper() not in read]
    if unread:
        if db:
            raise DeployError(
                f"inv test --db would set {', '.join(variables)} to a throwaway database, but "
                f"the app's code (and its tests, its Alembic env.py) never reads "
                f"{', '.join(unread)}: its tests would not use it",
                "set `database_url_env` in deploy.toml to the variable the app reads its "
                "database URL from (or `database_env` to the ones it builds it from)")
        local = reachable(urls)
        if urls or local:
            where = "; ".join(p for p in (f"{env_file} names {named}" if urls else "",
                                          f"listening on the laptop: {', '.join(local)}"
                                          if local else "") if p)
            raise DeployError(
                f"refusing to run the tests: the app's code never reads {', '.join(unread)}, "
                f"so a throwaway database cannot replace the one they would reach ({where})",
                "set `database_url_env` (or `database_env`) in deploy.toml to what the app "
                f"reads, or {NAME_IT.format(var=settings.database_url_env)}")
        return Plan("none", f"the app's code never reads {', '.join(unread)}")
    others = {k: v for k, v in urls.items() if k.upper() not in {v.upper() for v in variables}}
    if others:
        listed = ", ".join(f"{k} ({shown(v)})" for k, v in sorted(others.items()))
        raise DeployError(
            f"refusing to run the tests: {env_file} names a database in {listed}, which the "
            f"throwaway database (in {', '.join(variables)}) does not replace; the tests could "
            "write to it",
            f"{NAME_IT.format(var=settings.database_url_env)}, or remove it from {env_file}")
    overrides = dotenv_overrides(settings.path(settings.context))
    if urls and overrides:
        raise DeployError(
            f"refusing to run the tests: the app loads its .env with override=True "
            f"({overrides[0]}), which would put {named} back in place of the throwaway database",
            "drop override=True (variables set in the environment should win), or "
            + NAME_IT.format(var=settings.database_url_env))
    if not db and settings.path(settings.alembic_ini).exists() \
            and apppython.app_python(settings).in_image:
        if urls:
            raise DeployError(
                f"refusing to run the tests: {env_file} names {named}, and no throwaway "
                "database can replace it: the app's interpreter is in its image (app_python), "
                "so none could be migrated on the laptop",
                "point `app_python` at the app's local interpreter, or "
                + NAME_IT.format(var=settings.database_url_env))
        return Plan("none", "the app's interpreter is in its image (app_python): no "
                            "throwaway database could be migrated for them")
    return Plan("scratch")


def migrate_argv(settings: Settings, app: apppython.AppPython) -> tuple[list[str], Path] | None:
    """`alembic upgrade head` with the app's interpreter, and where to run it (None without
    an alembic.ini)."""
    ini = settings.path(settings.alembic_ini)
    if not ini.exists():
        return None
    return [*app.argv, "-m", "alembic", "-c", str(ini), "upgrade", "head"], ini.parent
