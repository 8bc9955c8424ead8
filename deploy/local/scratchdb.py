"""Throwaway databases of the production kind, for the migrations check and `inv test --db`.

SQLite apps get a scratch file; Postgres apps get a container from the image the app's compose
file names for its database service, published on 127.0.0.1 only, removed afterwards. Never a
database from the app's `.env`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.commands import docker
from deploy.core.compose import read_compose
from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.runner import Runner
from deploy.core.settings import Settings

PG_PORT = 5432
PG_USER = "postgres"
PG_DB = "scratch"
# Not a secret: the scratch database lives on 127.0.0.1 for the length of one check.
PG_PASSWORD = "scratch"


@dataclass(frozen=True)
class ScratchDb:
    """A scratch database: its URL from the laptop, and from a container sharing its network."""

    url: str
    container_url: str
    container: str = ""  # the Postgres container's name ('' for SQLite)
    port: int = 0  # the Postgres port published on the laptop's 127.0.0.1


def database_vars(settings: Settings, db: ScratchDb, in_container: bool = False) -> dict[str, str]:
    """The variables that point the app at the scratch database: its URL in
    `database_url_env`, or the parts in `database_env` (Postgres) for an app that builds its
    URL from them. `in_container`: as a container sharing the database's network sees it."""
    if not (settings.database_env and db.container):
        return {settings.database_url_env: db.container_url if in_container else db.url}
    values = {"host": "127.0.0.1", "port": str(PG_PORT if in_container else db.port),
              "user": PG_USER, "password": PG_PASSWORD, "name": PG_DB}
    return {var: values[part] for part, var in settings.database_env.items()}


def described(settings: Settings, db: ScratchDb) -> str:
    """Which variables the scratch database reaches the app through (for messages)."""
    return ", ".join(database_vars(settings, db))


def database_image(settings: Settings) -> str:
    """The image the compose file names for the database service (`postgres_service`)."""
    data = yaml.safe_load(read_compose(settings.path(settings.compose_file)))
    service = data["services"].get(settings.postgres_service)
    image = (service or {}).get("image") if isinstance(service, dict) else None
    if not image:
        raise DeployError(
            f"{settings.compose_file} has no service '{settings.postgres_service}' with an image",
            "name the database service with `postgres_service` in deploy.toml",
        )
    if "$" in image:
        raise DeployError(
            f"the database image in {settings.compose_file} is a variable ({image})",
            "name the image literally in the compose file (e.g. pgvector/pgvector:pg17)",
        )
    return image


def url_scheme(settings: Settings) -> str:
    """The scheme (with driver) the app's URL uses, from .env.example's value, e.g.
    `postgresql+psycopg`; plain `postgresql` when it names none."""
    example = settings.path(settings.env_example)
    value = read_env_file(example).get(settings.database_url_env, "") if example.exists() else ""
    scheme = value.split("://", 1)[0] if "://" in value else ""
    return scheme if scheme.startswith("postgres") else "postgresql"


@contextlib.contextmanager
def postgres(settings: Settings, runner: Runner, timeout: float = 90) -> Iterator[ScratchDb]:
    """Start a scratch Postgres container, yield its URLs, remove it (also on Ctrl-C)."""
    image = database_image(settings)
    name = f"deploy-scratch-{os.getpid()}-{secrets.token_hex(3)}"
    env = {"POSTGRES_PASSWORD": PG_PASSWORD, "POSTGRES_DB": PG_DB}
    runner.run(docker.run_database(image, name=name, env=env, port=PG_PORT,
                                    app=str(settings.root.resolve())), quiet=True,
               hide=True, what=f"could not start a scratch database from {image}",
               fix=f"make sure the image {image} is in the local engine (docker pull {image})")
    try:
        wait_ready(runner, name, timeout)
        mapped = runner.run(docker.port_of(name, PG_PORT), quiet=True).stdout
        host_port = mapped.strip().splitlines()[0].rsplit(":", 1)[-1]
        scheme = url_scheme(settings)
        yield ScratchDb(
            url=f"{scheme}://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{host_port}/{PG_DB}",
            container_url=f"{scheme}://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{PG_PORT}/{PG_DB}",
            container=name,
            port=int(host_port),
        )
    finally:
        runner.run(docker.remove(name), check=False, quiet=True)


def wait_ready(runner: Runner, name: str, timeout: float) -> None:
    """Until Postgres answers on TCP (the entrypoint's init server listens on a socket only)."""
    deadline = time.monotonic() + timeout
    probe = docker.exec_in(name, "pg_isready", "-q", "-h", "127.0.0.1", "-U", PG_USER, "-d", PG_DB)
    while time.monotonic() < deadline:
        if runner.run(probe, check=False, quiet=True).ok:
            return
        time.sleep(0.3)
    logs = runner.run(docker.logs(name), check=False, quiet=True).output
    raise DeployError(
        f"the scratch database did not accept connections within {timeout:.0f}s; it said:\n"
        + "\n".join("  " + line for line in logs.splitlines()[-10:]),
        "look at the image's output above",
    )


@contextlib.contextmanager
def sqlite(scratch_dir: Path) -> Iterator[ScratchDb]:
    path = scratch_dir / "scratch.db"
    yield ScratchDb(url=f"sqlite:///{path}", container_url="sqlite:////deploy-scratch/scratch.db")


def scratch(settings: Settings, runner: Runner, scratch_dir: Path
            ) -> contextlib.AbstractContextManager[ScratchDb]:
    """A scratch database of the production kind (settings `database`)."""
    if settings.database == "postgres":
        return postgres(settings, runner)
    return sqlite(scratch_dir)
