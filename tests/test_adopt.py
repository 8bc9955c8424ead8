"""Adopting a real app, the local half: checks that run where the app runs, the app's
own env reads, the build context, the project root found from a subdirectory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_no_traceback, commit_all, output
from test_checks import edit

from deploy.local.codevars import file_reads


def check(inv, repo: Path, name: str, cwd: Path | None = None, env: dict | None = None) -> dict:
    proc = inv(cwd or repo, "check", "--json", "--only", name, env=env)
    assert_no_traceback(proc)
    assert proc.stdout.startswith("["), output(proc)
    results = json.loads(proc.stdout)
    assert len(results) == 1, output(proc)
    assert proc.returncode == (0 if results[0]["ok"] else 1)
    return results[0]


# --- env-complete reads the app's code -----------------------------------------------------


def test_env_reads_found_by_ast(tmp_path):
    src = tmp_path / "conf.py"
    src.write_text(
        "import os\nfrom os import getenv\nfrom pydantic import Field\n"
        "from pydantic_settings import BaseSettings, SettingsConfigDict\n\n"
        "class Settings(BaseSettings):\n"
        "    model_config = SettingsConfigDict(env_prefix='APP_')\n"
        "    database_url: str\n    debug: bool = False\n"
        "    token: str = Field(validation_alias='API_TOKEN')\n"
        "    name: str = Field('x')\n\n"
        "A = os.environ['NEEDED_A']\nB = os.getenv('NEEDED_B')\nC = getenv('OPT_C', 'd')\n"
        "D = os.environ.get('OPT_D') or 'x'\nif os.environ.get('OPT_E'):\n    pass\n"
        "F = os.environ.get('OPT_F') == '1'\n"
    )
    reads = {r.name: r.required for r in file_reads(src, tmp_path)}
    assert reads == {
        "APP_DATABASE_URL": True, "APP_DEBUG": False, "API_TOKEN": True, "APP_NAME": False,
        "NEEDED_A": True, "NEEDED_B": True, "OPT_C": False, "OPT_D": False, "OPT_E": False,
        "OPT_F": False,
    }


def test_a_variable_the_code_reads_must_be_in_env_example(example_repo, inv):
    edit(example_repo / "app" / "main.py", 'DEFAULT_MODEL_NAME = "demo-model"',
         'DEFAULT_MODEL_NAME = "demo-model"\nEMBED_MODEL = os.environ["EMBED_MODEL"]')
    (example_repo / "app" / "config.py").write_text(
        "from pydantic_settings import BaseSettings, SettingsConfigDict\n\n\n"
        "class Settings(BaseSettings):\n"
        "    model_config = SettingsConfigDict(env_prefix='APP_')\n"
        "    openai_key: str\n    debug: bool = False\n")
    commit_all(example_repo, "the code reads two new variables")
    result = check(inv, example_repo, "env-complete")
    assert not result["ok"]
    assert "EMBED_MODEL (app/main.py:" in result["reason"]
    assert "APP_OPENAI_KEY (app/config.py:" in result["reason"]
    assert "APP_DEBUG" not in result["reason"] + result["fix"]
    assert result["fix"] == ("add APP_OPENAI_KEY, EMBED_MODEL to .env.example "
                             "(with a placeholder value)")
    # Declared in .env.example and set in .env: passes.
    for name in (".env.example", ".env"):
        with (example_repo / name).open("a") as f:
            f.write("EMBED_MODEL=m\nAPP_OPENAI_KEY=k\n")
    commit_all(example_repo, "declared")
    assert check(inv, example_repo, "env-complete")["ok"]


# --- build-context -------------------------------------------------------------------------


def test_build_context_catches_env_and_git_shipped_by_copy_dot(example_repo, inv):
    assert check(inv, example_repo, "build-context")["ok"]  # COPY of named dirs only
    edit(example_repo / "Dockerfile", "COPY app/ ./app/", "COPY . .")
    (example_repo / ".dockerignore").write_text("__pycache__/\n")
    commit_all(example_repo, "COPY . . without excluding secrets")
    result = check(inv, example_repo, "build-context")
    assert not result["ok"]
    assert result["reason"].startswith("the image would ship .env, .git")
    assert result["fix"] == "add these lines to .dockerignore: .env  .git"
    with (example_repo / ".dockerignore").open("a") as f:
        f.write(".env\n.git\n")
    commit_all(example_repo, "excluded")
    assert check(inv, example_repo, "build-context")["ok"]


# --- migrations: where the app runs, never its .env database -------------------------------


def test_migrations_from_a_subdirectory_finds_the_project_root(example_repo, inv):
    result = check(inv, example_repo, "migrations", cwd=example_repo / "app")
    assert result["ok"] and result["detail"].startswith("one head (0001)"), result
    assert "in .venv" in result["detail"]


def test_check_outside_any_project_refuses(tmp_path, inv):
    (tmp_path / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
    proc = inv(tmp_path, "check")
    assert proc.returncode == 1
    assert f"error: no deploy.toml in {tmp_path.resolve()} or any directory above it" in \
        proc.stderr
    assert "inv init" in proc.stderr
    assert_no_traceback(proc)
    proc = inv(tmp_path, "config")
    assert proc.returncode == 1 and "error: no deploy.toml" in proc.stderr


def test_migrations_refuses_when_the_url_variable_is_not_read(example_repo, inv):
    with (example_repo / "deploy.toml").open("a") as f:
        f.write('database_url_env = "SQLALCHEMY_URL"\n')
    commit_all(example_repo, "a URL variable the app never reads")
    result = check(inv, example_repo, "migrations")
    assert not result["ok"]
    assert "cannot tell how the app builds its database URL" in result["reason"]
    assert "SQLALCHEMY_URL" in result["reason"]
    assert "database_url_env" in result["fix"]


def test_migrations_run_in_the_apps_python_not_the_tools(example_repo, inv, tmp_path):
    """An app interpreter without Alembic: the probe says so (the tool's venv has Alembic)."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with (example_repo / "deploy.toml").open("a") as f:
        f.write(f'app_python = "{bare}/bin/python"\n')
    commit_all(example_repo, "an app Python without alembic")
    result = check(inv, example_repo, "migrations")
    assert not result["ok"]
    assert result["reason"].startswith("alembic cannot be imported in app_python = ")
    assert "No module named 'alembic'" in result["reason"]


def test_migrations_see_the_sys_path_the_real_alembic_sees(example_repo, inv):
    """Without `prepend_sys_path = .` the real `alembic` cannot import the app: neither can
    the check (it used to put the working directory on sys.path and pass)."""
    edit(example_repo / "alembic.ini", "prepend_sys_path = .", "")
    commit_all(example_repo, "no prepend_sys_path")
    result = check(inv, example_repo, "migrations")
    assert not result["ok"]
    assert "No module named 'app'" in result["reason"]
    real = subprocess.run([str(example_repo / ".venv/bin/alembic"), "heads"], cwd=example_repo,
                          capture_output=True, text=True, check=False)
    upgrade = subprocess.run(
        [str(example_repo / ".venv/bin/alembic"), "upgrade", "head", "--sql"],
        cwd=example_repo, capture_output=True, text=True, check=False)
    assert real.returncode == 0  # heads reads the scripts only
    assert upgrade.returncode != 0 and "No module named 'app'" in upgrade.stderr


def test_migrations_without_target_metadata_checks_heads_only_and_says_so(example_repo, inv):
    edit(example_repo / "migrations" / "env.py", "target_metadata = Base.metadata",
         "target_metadata = None")
    commit_all(example_repo, "no metadata")
    result = check(inv, example_repo, "migrations")
    assert result["ok"], result
    assert "no target_metadata" in result["detail"]
    assert "not checked" in result["detail"]


# --- migrations against a scratch Postgres; the real one in .env is never touched ----------

PG_IMAGE = "postgres:17"


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="session")
def pg_image(docker_engine) -> str:
    if docker("image", "inspect", PG_IMAGE).returncode != 0:
        pytest.skip(f"{PG_IMAGE} is not in the local engine (the sandbox set-up builds it)")
    return PG_IMAGE


@pytest.fixture(scope="session")
def pg_venv(tmp_path_factory) -> Path:
    """An app venv of its own (not the tool's): Alembic, SQLAlchemy, psycopg, python-dotenv."""
    from deploy.local.apppython import tool_path

    venv = tmp_path_factory.mktemp("pgvenv") / "venv"
    uv = tool_path("uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    proc = subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin/python"),
                           "alembic", "sqlalchemy", "psycopg[binary]", "python-dotenv"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot install the Postgres app's venv from PyPI: {proc.stderr[-300:]}")
    return venv


@pytest.fixture
def real_postgres(pg_image):
    """A 'production' Postgres that logs every connection, with one precious row."""
    from vmkit import unique

    name = unique("realdb-")
    proc = docker("run", "-d", "--rm", "--name", name, "-e", "POSTGRES_PASSWORD=realpw",
                  "-e", "POSTGRES_DB=real", "--no-healthcheck", "-p", "127.0.0.1::5432", pg_image,
                  "-c", "log_connections=on")
    assert proc.returncode == 0, proc.stderr
    try:
        for _ in range(200):
            if docker("exec", name, "pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres",
                      "-d", "real").returncode == 0:
                break
            import time
            time.sleep(0.3)
        psql(name, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1);")
        port = docker("port", name, "5432/tcp").stdout.split(":")[-1].strip()
        yield name, int(port)
    finally:
        docker("rm", "--force", "--volumes", name)


def psql(name: str, sql: str) -> str:
    proc = docker("exec", name, "psql", "-U", "postgres", "-d", "real", "-tAc", sql)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def connections(name: str) -> int:
    """TCP connections the real database authorized (its log, log_connections=on)."""
    logs = docker("logs", name)
    return sum("connection authorized" in line for line in (logs.stdout + logs.stderr).splitlines())


def make_postgres_app(repo: Path, venv: Path, real_port: int) -> None:
    """The example as a Postgres app whose code loads .env (python-dotenv), .env naming the
    real database."""
    (repo / ".venv").unlink()
    (repo / ".venv").symlink_to(venv)
    edit(repo / "app" / "db.py", "import os\n", "import os\n\nfrom dotenv import load_dotenv\n\n"
                                                "load_dotenv()\n")
    edit(repo / "compose.yaml", "services:\n", "services:\n  db:\n    image: postgres:17\n")
    edit(repo / "deploy.toml", 'database = "sqlite"', 'database = "postgres"')
    with (repo / ".env.example").open("a") as f:
        f.write("DATABASE_URL=postgresql+psycopg://app:change-me@db:5432/app\n")
    with (repo / ".env").open("a") as f:
        f.write(f"DATABASE_URL=postgresql+psycopg://postgres:realpw@127.0.0.1:{real_port}/real\n")
    commit_all(repo, "a Postgres app whose .env names the real database")


def test_check_never_connects_to_the_database_in_dotenv(example_repo, inv, pg_venv,
                                                        real_postgres):
    name, port = real_postgres
    make_postgres_app(example_repo, pg_venv, port)
    before = connections(name)
    # this app's scratch databases only: other workers' checks start and stop theirs meanwhile
    mine = f"label=deploy-toolkit.scratch.app={example_repo.resolve()}"
    scratch_before = docker("ps", "-aq", "--filter", mine).stdout
    since = f"{time.time() - 1:.0f}"

    proc = inv(example_repo, "check", "--json")  # every check, as a user runs it
    assert_no_traceback(proc)
    results = {r["name"]: r for r in json.loads(proc.stdout)}
    assert all(r["ok"] for r in results.values()), results
    assert "on a scratch Postgres database" in results["migrations"]["detail"]
    assert connections(name) == before, "the check connected to the database in .env"
    assert psql(name, "SELECT count(*) FROM precious") == "1"
    assert psql(name, "SELECT to_regclass('alembic_version') IS NULL") == "t"
    after = docker("ps", "-aq", "--filter", mine).stdout
    assert set(after.split()) <= set(scratch_before.split()), "scratch database left behind"
    started = docker("events", "--since", since, "--until", f"{time.time():.0f}", "--filter",
                     "event=start", "--filter", mine, "--format", "{{.ID}}").stdout.split()
    assert started, "no scratch database of this app started: the label filter sees nothing"

    # The proof can fail: the app's own alembic, run as the user would, does reach it.
    proc = subprocess.run([str(pg_venv / "bin/alembic"), "current"], cwd=example_repo,
                          capture_output=True, text=True, check=False,
                          env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"})
    assert proc.returncode == 0, proc.stderr
    assert connections(name) > before


def test_migrations_check_catches_drift_on_scratch_postgres(example_repo, inv, pg_venv,
                                                            real_postgres):
    _, port = real_postgres
    make_postgres_app(example_repo, pg_venv, port)
    edit(example_repo / "app" / "models.py",
         "    name: Mapped[str] = mapped_column(String(200), nullable=False)\n",
         "    name: Mapped[str] = mapped_column(String(200), nullable=False)\n"
         "    extra: Mapped[str] = mapped_column(String(20), nullable=True)\n")
    commit_all(example_repo, "a model change without a migration")
    dangling = docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
    result = check(inv, example_repo, "migrations")
    assert not result["ok"]
    assert "the models differ from the migrations" in result["reason"]
    assert "extra" in result["reason"]
    # the scratch database went with its data directory (the image's anonymous volume)
    left = set(docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split())
    assert left <= set(dangling), left - set(dangling)


# --- the tests' database: a throwaway one, never the developer's own by accident -----------

WIPE_TEST = """\
\"\"\"The app's database test: it starts from an empty items table, as many apps' tests do.\"\"\"
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from app.db import engine  # noqa: E402

with engine.begin() as conn:
    conn.execute(text("DELETE FROM items"))
    left = conn.execute(text("SELECT count(*) FROM items")).scalar()
print(f"wiped items on {engine.url.database}: {left} left")
"""


def app_whose_tests_wipe_items(repo: Path, venv: Path, real: tuple[str, int]) -> None:
    """The Postgres app of make_postgres_app, .env naming the developer's database (3 rows
    in items), with a test that empties items through the app's own engine."""
    name, port = real
    make_postgres_app(repo, venv, port)
    psql(name, "CREATE TABLE items (id serial PRIMARY KEY, name varchar(200) NOT NULL); "
               "INSERT INTO items (name) VALUES ('mine'), ('also mine'), ('keep me');")
    (repo / "tests" / "wipe_items.py").write_text(WIPE_TEST)
    with (repo / "deploy.toml").open("a") as f:
        f.write('test_command = ".venv/bin/python tests/wipe_items.py"\n')
    commit_all(repo, "a test that empties items")


def precious_rows(name: str) -> str:
    return psql(name, "SELECT string_agg(name, ',' ORDER BY id) FROM items")


def test_inv_test_gives_a_migrated_throwaway_database_and_leaves_dotenvs_untouched(
        example_repo, inv, pg_venv, real_postgres):
    name, port = real_postgres
    app_whose_tests_wipe_items(example_repo, pg_venv, real_postgres)
    before = connections(name)

    proc = inv(example_repo, "test")
    assert proc.returncode == 0, output(proc)
    assert "tests get DATABASE_URL = a throwaway Postgres container, migrated to head" \
        in proc.stdout, output(proc)
    assert "wiped items on scratch: 0 left" in proc.stdout  # migrated: items exists there
    # (psql below logs in too: the connections are counted first)
    assert connections(name) == before, "the tests connected to the database in .env"
    assert precious_rows(name) == "mine,also mine,keep me"
    before = connections(name)

    # A second database URL in .env, which the throwaway one does not replace: refused.
    env_file = example_repo / ".env"
    env_file.write_text(env_file.read_text() + "REPORTS_DATABASE_URL=postgresql://postgres:"
                        f"realpw@127.0.0.1:{port}/real\n")
    proc = inv(example_repo, "test")
    assert proc.returncode == 1, output(proc)
    assert_no_traceback(proc)
    assert ("error: refusing to run the tests: .env names a database in REPORTS_DATABASE_URL "
            f"(postgresql://postgres:***@127.0.0.1:{port}/real)") in proc.stderr, output(proc)
    assert "realpw" not in output(proc)
    assert "fix: name the database the tests may use: test_database_url" in proc.stderr
    assert "wiped" not in proc.stdout
    env_file.write_text(env_file.read_text().replace("REPORTS_", "# REPORTS_"))

    # A variable the code never reads: `--db` names it and refuses; without --db, the
    # database in .env could be reached: refused too.
    for args in (["--db"], []):
        proc = inv(example_repo, "test", *args, env={"DEPLOY_DATABASE_URL_ENV": "DB_URL"})
        assert proc.returncode == 1, output(proc)
        assert_no_traceback(proc)
        assert "wiped" not in proc.stdout
        assert "never reads DB_URL" in proc.stderr, output(proc)
        if args:
            assert "error: inv test --db would set DB_URL to a throwaway database" \
                in proc.stderr, output(proc)
        else:
            assert "error: refusing to run the tests: the app's code never reads DB_URL" \
                in proc.stderr, output(proc)
    assert connections(name) == before
    assert precious_rows(name) == "mine,also mine,keep me"

    # Named by the user: the tests get it (and this test really empties a table).
    proc = inv(example_repo, "test", env={
        "DEPLOY_TEST_DATABASE_URL": f"postgresql+psycopg://postgres:realpw@127.0.0.1:{port}/real"})
    assert proc.returncode == 0, output(proc)
    assert (f"tests get DATABASE_URL = test_database_url (postgresql+psycopg://postgres:***@"
            f"127.0.0.1:{port}/real)") in proc.stdout, output(proc)
    assert "wiped items on real: 0 left" in proc.stdout
    assert psql(name, "SELECT count(*) FROM items") == "0"


def test_inv_deploys_test_step_leaves_the_database_in_dotenv_untouched(
        make_app, images, pg_venv, real_postgres):
    """`inv deploy`'s test step gets the throwaway database too. The tag is already in the
    registry (no build) and a pre-deploy hook stops the release after the test step."""
    from conftest import git
    from vmkit import delete_from_registry, unique
    from vmkit import docker as vm_docker

    name, _ = real_postgres
    app = make_app(image=f"{images.image}-{unique('testdb-')}")
    app_whose_tests_wipe_items(app.repo, pg_venv, real_postgres)
    hook = app.repo / ".deploy" / "hooks" / "pre-deploy"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\necho 'stopping here: the test step is what is tested'\nexit 1\n")
    hook.chmod(0o755)
    commit_all(app.repo, "a pre-deploy hook that stops the release")
    tag = git(app.repo, "rev-parse", "--short", "HEAD")
    ref = f"{app.env['DEPLOY_IMAGE']}:{tag}"
    try:
        for args in (("tag", images.ref(images.v1), ref), ("push", "--quiet", ref)):
            assert vm_docker(*args).returncode == 0
        app.fab_ok("setup")
        before = connections(name)
        proc = app.inv("deploy")
    finally:
        vm_docker("rmi", ref)
        delete_from_registry(app.env["DEPLOY_IMAGE"].split("/", 1)[1])
    out = output(proc)
    assert proc.returncode == 1, out
    assert "tests get DATABASE_URL = a throwaway Postgres container, migrated to head" in out
    assert "wiped items on scratch: 0 left" in out
    assert "stopping here" in out  # the hook ran after the test step
    assert connections(name) == before, "the test step connected to the database in .env"
    assert precious_rows(name) == "mine,also mine,keep me"


# --- inv test: the app's command, directory and interpreter --------------------------------


def test_inv_test_runs_the_test_command_in_test_dir(example_repo, inv):
    with (example_repo / "deploy.toml").open("a") as f:
        f.write('test_dir = "tests"\ntest_command = "sh -c \'pwd; exit 3\'"\n')
    proc = inv(example_repo, "test")
    assert proc.returncode == 3, output(proc)
    assert f"{example_repo.resolve()}/tests\n" in proc.stdout
    assert "tests failed (exit 3)" in proc.stderr


def test_inv_test_uses_the_apps_interpreter(example_repo, inv, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    (example_repo / ".venv").unlink()
    (example_repo / ".venv").symlink_to(bare)
    proc = inv(example_repo, "test")
    assert proc.returncode == 1, output(proc)
    # the tests' throwaway database is migrated first, by the app's interpreter (a venv
    # without alembic), which says so itself; no test ran
    assert "error: migrating the tests' throwaway database to head failed; no test ran" \
        in proc.stderr, output(proc)
    assert f"{example_repo}/.venv/bin/python: No module named alembic" in output(proc)
    # without a database, pytest runs straight away, with the app's interpreter too
    none = {"DEPLOY_DATABASE": "none"}
    proc = inv(example_repo, "test", env=none)
    assert proc.returncode == 1, output(proc)
    assert f"{example_repo}/.venv/bin/python: No module named pytest" in output(proc)
    verbose = inv(example_repo, "test", env={**none, "DEPLOY_VERBOSE": "1"})
    assert f"{example_repo}/.venv/bin/python -m pytest" in verbose.stdout, output(verbose)


def test_inv_deploy_skip_check_is_said_and_goes_into_the_message(example_repo, inv):
    proc = inv(example_repo, "deploy", "--dry-run", "--skip-check", "build-context",
               "--skip-check", "migrations", env={"DEPLOY_HOST": "127.0.0.1"})
    assert proc.returncode == 0, output(proc)
    assert "check build-context waived (--skip-check build-context)" in proc.stdout
    assert "check migrations waived" in proc.stdout
    assert "waived checks: build-context, migrations" in proc.stdout  # the lock's holder note
    proc = inv(example_repo, "deploy", "--dry-run", "--skip-check", "migration",
               env={"DEPLOY_HOST": "127.0.0.1"})
    assert proc.returncode == 1
    assert "error: no check named 'migration'" in proc.stderr
    assert_no_traceback(proc)


def test_migrations_without_a_local_environment_run_in_the_built_image(example_repo, inv,
                                                                      base_image):
    from vmkit import unique

    image = f"127.0.0.1:5000/{unique('adopt-probe-')}"
    (example_repo / ".venv").unlink()
    try:
        result = check(inv, example_repo, "migrations", env={"DEPLOY_IMAGE": image})
        assert result["ok"], result
        assert result["detail"] == (
            "one head (0001); models match the migrations (in the app's image (no venv, uv.lock "
            "or poetry.lock found), on a scratch SQLite database)")
        edit(example_repo / "app" / "models.py",  # a drift is caught in the image too
             "    name: Mapped[str] = mapped_column(String(200), nullable=False)\n",
             "    name: Mapped[str] = mapped_column(String(200), nullable=False)\n"
             "    extra: Mapped[str] = mapped_column(String(20), nullable=True)\n")
        commit_all(example_repo, "drift")
        result = check(inv, example_repo, "migrations", env={"DEPLOY_IMAGE": image})
        assert not result["ok"] and "extra" in result["reason"], result
    finally:
        refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", image).stdout.split()
        if refs:
            docker("rmi", *refs)


def test_migrations_refuses_an_app_whose_dotenv_overrides_the_environment(example_repo, inv):
    edit(example_repo / "app" / "db.py", "import os\n",
         "import os\n\nfrom dotenv import load_dotenv\n\nload_dotenv(override=True)\n")
    commit_all(example_repo, ".env wins over the environment")
    result = check(inv, example_repo, "migrations")
    assert not result["ok"]
    assert result["reason"].startswith("the app loads its .env with override=True (app/db.py:")
    assert "override=True" in result["fix"]
