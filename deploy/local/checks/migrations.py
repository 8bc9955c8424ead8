"""migrations: one Alembic head, and the models match the migrations (the create_all trap).

Runs Alembic in the APP's environment (see deploy.local.apppython), never in the tool's, against a
scratch database of the production kind (a SQLite file, or a throwaway Postgres container from
the image the compose file names). The URL reaches the app through the variable named by
`database_url_env` (or its parts, `database_env`); when the app's code never reads them, the
check refuses rather than risk the app connecting to the database its `.env` names.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from invoke import Context

from deploy.commands import docker
from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.local import apppython, dockerfile, git, imagebuild, scratchdb
from deploy.local.checks.result import CheckResult, failed, passed
from deploy.local.codevars import app_env_reads, dotenv_overrides, file_reads

PROBE = Path(__file__).with_name("alembic_probe.py")
TIMEOUT = 300
IN_IMAGE_DIR = "/deploy-probe"


def url_variable_read(settings: Settings, ini: Path) -> bool:
    """Whether the app's code or its Alembic env.py reads the scratch database's variables."""
    reads = list(app_env_reads(settings.path(settings.context)))
    script_dir = apppython.alembic_script_dir(ini)
    if script_dir and (script_dir / "env.py").exists():
        reads += file_reads(script_dir / "env.py", script_dir)
    names = {r.name.upper() for r in reads}
    return all(v.upper() in names for v in url_variables(settings))


def url_variables(settings: Settings) -> list[str]:
    """The variables the scratch database reaches the app through."""
    if settings.database_env and settings.database == "postgres":
        return list(settings.database_env.values())
    return [settings.database_url_env]


def migrations(settings: Settings) -> CheckResult:
    name = "migrations"
    ini = settings.path(settings.alembic_ini)
    if not ini.exists():
        return passed(name, f"no {settings.alembic_ini} (setting alembic_ini): no migrations")
    if not url_variable_read(settings, ini):
        return failed(
            name,
            f"cannot tell how the app builds its database URL: its code never reads "
            f"{' or '.join(url_variables(settings))}, so a scratch database could not replace "
            f"the one in {settings.env_file}",
            "set `database_url_env` in deploy.toml to the variable the app reads its whole "
            "database URL from, or `database_env` to the variables it builds it from "
            "({host = ..., port = ..., user = ..., password = ..., name = ...}); the check "
            "sets them to a scratch database",
        )
    overrides = dotenv_overrides(settings.path(settings.context))
    if overrides:
        return failed(
            name,
            f"the app loads its .env with override=True ({overrides[0]}): that would replace "
            f"the scratch {settings.database_url_env} with the database in {settings.env_file}",
            "drop override=True (variables set in the environment should win), or run the "
            "check with `app_python = \"image\"` (no .env in the image)",
        )
    app = apppython.app_python(settings)
    apppython.prepare(settings, app)
    with tempfile.TemporaryDirectory(prefix="deploy-check-") as tmp:
        scratch_dir = Path(tmp)
        os.chmod(scratch_dir, 0o777)  # the image may run as a non-root user
        shutil.copy(PROBE, scratch_dir / PROBE.name)
        runner = quiet_runner()
        if settings.check_database_url:
            db = scratchdb.ScratchDb(settings.check_database_url, settings.check_database_url)
            proc, how = run_probe(settings, app, runner, scratch_dir, ini, db)
            kind = "the check_database_url database"
        else:
            with scratchdb.scratch(settings, runner, scratch_dir) as db:
                proc, how = run_probe(settings, app, runner, scratch_dir, ini, db)
            kind = f"a scratch {'Postgres' if db.container else 'SQLite'} database"
    return verdict(name, proc, how, f"in {app.where}, on {kind}")


def quiet_runner() -> Runner:
    return Runner(Context(), out=sys.stderr)


def run_probe(settings: Settings, app: apppython.AppPython, runner: Runner, scratch_dir: Path,
              ini: Path,
              db: scratchdb.ScratchDb) -> tuple[subprocess.CompletedProcess[str], str]:
    """The probe's process, and the equivalent alembic command for the user to try."""
    url_env = settings.database_url_env
    app_env = example_values(settings)
    if app.in_image:
        ref = built_image(settings, runner)
        ini_rel = os.path.relpath(ini, settings.path(settings.context))

        python = dockerfile.image_env(dockerfile.parse(settings.path(settings.dockerfile)))
        app_env = {**app_env, **scratchdb.database_vars(settings, db, in_container=True)}
        argv = docker_probe(ref, scratch_dir, ini_rel, db, url_env, app_env,
                            python=python.command("python"))
        how = f"docker run --rm {ref} alembic -c {ini_rel} heads"
        cwd = None
        env = None
    else:
        argv = [*app.argv, str(scratch_dir / PROBE.name), str(ini), db.url, url_env]
        how = f"cd {shlex.quote(str(ini.parent))} && {shlex.join(app.argv)} -m alembic heads"
        cwd = ini.parent
        env = apppython.app_environ({**app_env, url_env: db.url,
                                     **scratchdb.database_vars(settings, db)})
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"the migrations probe took over {TIMEOUT}s", f"try: {how}") from None
    except FileNotFoundError as exc:
        raise DeployError(f"cannot start the app's Python: {exc.filename} does not exist",
                          "set `app_python` in deploy.toml to the app's interpreter") from None
    return proc, how


def example_values(settings: Settings) -> dict[str, str]:
    """The app's variables with the placeholder values of .env.example (never .env's)."""
    path = settings.path(settings.env_example)
    return read_env_file(path) if path.exists() else {}


def docker_probe(ref: str, scratch_dir: Path, ini_rel: str, db: scratchdb.ScratchDb,
                 url_env: str, app_env: dict[str, str], python: str = "python") -> list[str]:
    probe = f"{IN_IMAGE_DIR}/{PROBE.name}"
    return docker.run_probe(
        ref,
        mounts={str(scratch_dir / PROBE.name): probe, str(scratch_dir): "/deploy-scratch:rw"},
        env={**app_env, url_env: db.container_url},
        network=f"container:{db.container}" if db.container else "none",
        command=[*shlex.split(python), probe, ini_rel, db.container_url, url_env],
    )


def built_image(settings: Settings, runner: Runner) -> str:
    """The app's image for the working tree (built now; Docker's cache makes a rebuild cheap)."""
    version = "check"
    if git.is_repo(settings.root):
        version = git.resolve_version(settings.root, "", allow_dirty=True)
    return imagebuild.build(settings, runner, version, quiet=True)


def verdict(name: str, proc: subprocess.CompletedProcess[str], how: str,
            where: str) -> CheckResult:
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return failed(name, f"alembic could not run {where}: {err[:200]}", f"see why: {how}")
    heads = result["heads"]
    if result["step"] == "import":
        return failed(name, f"alembic cannot be imported {where}: {result['message']}",
                      "add alembic to the app's dependencies (or set `app_python`)")
    if result["step"] == "heads":
        if not heads:
            return failed(name, "Alembic has no revisions", "create one: alembic revision -m init")
        return failed(
            name,
            f"{len(heads)} Alembic heads ({', '.join(heads)}): `alembic upgrade head` would fail",
            f"merge them: alembic merge -m merge {' '.join(heads)}",
        )
    if result["step"] == "upgrade":
        return failed(
            name,
            f"migrating an empty database to head failed {where}: {result['message'][:200]}",
            f"fix the failing migration or the import it names (try: {how})",
        )
    if result["step"] == "check":
        diffs = " ".join(result["message"].split())
        return failed(
            name,
            f"the models differ from the migrations: {diffs[:160]}",
            'write the migration: alembic revision --autogenerate -m "..."',
        )
    if result["step"] == "no-metadata":
        return passed(name, f"one head ({heads[0]}), upgrade ok {where}; env.py sets no "
                            "target_metadata, so models vs migrations was not checked")
    return passed(name, f"one head ({heads[0]}); models match the migrations ({where})")
