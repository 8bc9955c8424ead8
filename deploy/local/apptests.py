"""`inv test`: the app's tests, in the app's environment and directory.

`test_command` (default: pytest with the app's interpreter, see deploy.local.apppython) runs in
`test_dir` (default: the project root). When the app has a database, a throwaway one of the
production kind (deploy.local.scratchdb) is started first, migrated to head, and passed in
`database_url_env` (or `database_env`'s parts); `--db` asks for one even when `database` is
"none". deploy.local.testdb decides, and refuses when the developer's own database could be reached.
"""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from pathlib import Path

from deploy.core.errors import DeployError
from deploy.core.runner import Result, Runner
from deploy.core.settings import Settings
from deploy.local import apppython, scratchdb, testdb

NO_TESTS_COLLECTED = 5


def test_argv(settings: Settings, extra: list[str]) -> list[str]:
    """The test command: `test_command`, else `<the app's python> -m pytest`."""
    if settings.test_command:
        return [*shlex.split(settings.test_command), *extra]
    app = apppython.app_python(settings)
    if app.in_image:
        raise DeployError(
            "the app has no local environment to run its tests in (no .venv, uv.lock or "
            "poetry.lock)",
            "set `app_python` (the app's interpreter) or `test_command` in deploy.toml",
        )
    return [*app.argv, "-m", "pytest", *extra]


def run(settings: Settings, runner: Runner, extra: list[str], db: bool = False) -> Result:
    """Run the tests with the database deploy.local.testdb picks for them (`db`: `inv test --db`);
    the test command's result."""
    argv = test_argv(settings, extra)
    wanted = testdb.plan(settings, db)
    if not settings.test_command and not runner.dry_run:  # a first `poetry run` makes its env
        apppython.prepare(settings, apppython.app_python(settings))
    cwd = str(settings.path(settings.test_dir or "."))
    env = apppython.app_environ()
    with contextlib.ExitStack() as stack:
        if wanted.kind == "named":
            env[settings.database_url_env] = settings.test_database_url
            runner.say(f"tests get {settings.database_url_env} = test_database_url "
                       f"({testdb.shown(settings.test_database_url)}), as deploy.toml names it")
        elif wanted.kind == "scratch" and runner.dry_run:
            runner.say(f"would start a throwaway {settings.database} database for the tests, "
                       "migrated to head")
        elif wanted.kind == "scratch":
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploy-test-")))
            database = stack.enter_context(scratchdb.scratch(settings, runner, scratch))
            env.update(scratchdb.database_vars(settings, database))
            migrated = migrate(settings, runner, env)
            runner.say(f"tests get {scratchdb.described(settings, database)} = a throwaway "
                       f"{'Postgres container' if database.container else 'SQLite file'}"
                       f", {migrated}")
        elif wanted.why:
            runner.say(f"tests get no database: {wanted.why}")
        return runner.run(argv, check=False, cwd=cwd, env=env)


def migrate(settings: Settings, runner: Runner, env: dict[str, str]) -> str:
    """Migrate the scratch database to head with the app's interpreter; says how it went."""
    app = apppython.app_python(settings)
    how = None if app.in_image else testdb.migrate_argv(settings, app)
    if how is None:
        return (f"not migrated (no {settings.alembic_ini})" if not app.in_image else
                "not migrated (the app's interpreter is in its image: app_python)")
    argv, cwd = how
    result = runner.run(argv, check=False, hide=True, cwd=str(cwd), env=env)
    if not result.ok:
        tail = "\n".join(result.output.strip().splitlines()[-15:])
        raise DeployError("migrating the tests' throwaway database to head failed; no test "
                          f"ran:\n{tail}", "fix what alembic says above (it ran as "
                          f"`{shlex.join(argv)}` in {cwd}, with {app.where})")
    return "migrated to head"
