"""`inv test`: the app's tests, in the app's environment and directory.

`test_command` (default: pytest with the app's interpreter, see deploy.appenv) runs in
`test_dir` (default: the project root). With `--db`, a throwaway database of the production
kind (deploy.scratchdb) is started first and its URL passed in `database_url_env`.
"""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from pathlib import Path

from deploy import appenv, scratchdb
from deploy.errors import DeployError
from deploy.runner import Result, Runner
from deploy.settings import Settings

NO_TESTS_COLLECTED = 5


def test_argv(settings: Settings, extra: list[str]) -> list[str]:
    """The test command: `test_command`, else `<the app's python> -m pytest`."""
    if settings.test_command:
        return [*shlex.split(settings.test_command), *extra]
    app = appenv.app_python(settings)
    if app.in_image:
        raise DeployError(
            "the app has no local environment to run its tests in (no .venv, uv.lock or "
            "poetry.lock)",
            "set `app_python` (the app's interpreter) or `test_command` in deploy.toml",
        )
    return [*app.argv, "-m", "pytest", *extra]


def run(settings: Settings, runner: Runner, extra: list[str], db: bool = False) -> Result:
    """Run the tests (with a scratch database when `db`); the test command's result."""
    argv = test_argv(settings, extra)
    if not settings.test_command and not runner.dry_run:  # a first `poetry run` makes its env
        appenv.prepare(settings, appenv.app_python(settings))
    cwd = str(settings.path(settings.test_dir or "."))
    env = appenv.app_environ()
    with contextlib.ExitStack() as stack:
        if db:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploy-test-")))
            database = stack.enter_context(scratchdb.scratch(settings, runner, scratch))
            env.update(scratchdb.app_env(settings, database))
            runner.say(f"tests get {scratchdb.described(settings, database)} = a throwaway "
                       f"{'Postgres container' if database.container else 'SQLite file'}")
        return runner.run(argv, check=False, cwd=cwd, env=env)
