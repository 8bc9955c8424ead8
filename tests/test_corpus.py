"""The adoption corpus: app shapes this project writes itself, each adopted as a new
user would (`deploy-init`, i.e. `inv init` before a tasks.py exists, then `inv check`).

(a) the SQLite example; (c) a uv workspace with the app in backend/, a Python 3.10 image, a
migrate script that is not `alembic`, its own compose image variables and `env_file: .env`;
(d) a Poetry app on Postgres + pgvector; (e) an app with two Alembic heads and no lock;
(b) the Postgres example, example-postgres/ (app and pgvector database both on `.env`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_no_traceback, commit_all, git, make_example_repo, output
from test_checks import CHECKS, edit

CORPUS = Path(__file__).parent / "corpus"
PY310 = Path.home() / ".pyenv/versions/3.10.13/bin"
VENV_BIN = Path(sys.executable).parent
IGNORE = shutil.ignore_patterns(".venv", "__pycache__", ".env", "data")


# each test runs the app's tools (Alembic, uv, pytest) in subprocesses: seconds each
pytestmark = pytest.mark.slow


def user_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """PATH as a user with pyenv's 3.10 would have it; Poetry keeps its venv in the project."""
    path = os.pathsep.join([str(VENV_BIN), str(PY310), os.environ.get("PATH", "")])
    return {"PATH": path, "POETRY_VIRTUALENVS_IN_PROJECT": "true", **(extra or {})}


def init_repo(repo: Path) -> None:
    if not (repo / ".env").exists():
        (repo / ".env").write_text((repo / ".env.example").read_text())
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "tests@example.invalid")
    git(repo, "config", "user.name", "Deploy Tests")
    git(repo, "config", "commit.gpgsign", "false")
    commit_all(repo, "the app")


def deploy_init(repo: Path, *args: str, image: str = "") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(VENV_BIN / "deploy-init"), *args], cwd=repo, env={
        **os.environ, **user_env()}, capture_output=True, text=True, timeout=120, check=False)
    assert_no_traceback(proc)
    if proc.returncode == 0 and image:
        if "\nimage = " not in (repo / "deploy.toml").read_text():
            with (repo / "deploy.toml").open("a") as f:
                f.write(f'image = "{image}"\n')
        commit_all(repo, "adopt the deploy toolkit")
    return proc


def adopt(name: str, dest: Path) -> tuple[Path, str]:
    repo = dest / name
    shutil.copytree(CORPUS / name, repo, ignore=IGNORE)
    init_repo(repo)
    proc = deploy_init(repo, image=f"127.0.0.1:5000/corpus-{name}")
    assert proc.returncode == 0, output(proc)
    return repo, proc.stdout


def verdicts(inv, repo: Path, cwd: Path | None = None) -> dict[str, dict]:
    proc = inv(cwd or repo, "check", "--json", env=user_env(), timeout=600)
    assert_no_traceback(proc)
    assert proc.stdout.startswith("["), output(proc)
    results = {r["name"]: r for r in json.loads(proc.stdout)}
    assert list(results) == CHECKS
    assert proc.returncode == (0 if all(r["ok"] for r in results.values()) else 1)
    return results


def failing(results: dict[str, dict]) -> list[str]:
    return [name for name, r in results.items() if not r["ok"]]


# --- (a) the example -----------------------------------------------------------------------


def test_a_the_example_adopted_from_scratch(tmp_path, inv):
    repo = make_example_repo(tmp_path / "a")
    (repo / "deploy.toml").unlink()
    (repo / "tasks.py").unlink()
    commit_all(repo, "not adopted yet")
    proc = deploy_init(repo)
    assert proc.returncode == 0, output(proc)
    settings = (repo / "deploy.toml").read_text()
    assert 'image = "127.0.0.1:5000/example"' in settings  # the compose file's default
    assert 'database_url_env = "DATABASE_URL"' in settings
    assert 'lock_kind = "requirements"' in settings
    commit_all(repo, "adopted")
    results = verdicts(inv, repo)
    assert failing(results) == [], results


# --- (b) the Postgres example ------------------------------------------------------------

EXAMPLE_PG = REPO / "example-postgres"


def test_b_the_postgres_example_adopted_from_scratch(tmp_path, inv):
    """Its app image's name contains "postgres": the database is still the pgvector service."""
    repo = tmp_path / "b"
    shutil.copytree(EXAMPLE_PG, repo, ignore=IGNORE)
    (repo / "deploy.toml").unlink()
    init_repo(repo)
    proc = deploy_init(repo)
    assert proc.returncode == 0, output(proc)
    assert "database service 'db' (pgvector/pgvector:pg17): Postgres" in proc.stdout
    assert "cannot tell which compose service" not in proc.stdout
    settings = (repo / "deploy.toml").read_text()
    for line in ('service = "app"', 'postgres_service = "db"', 'postgres_user = "app"',
                 'postgres_db = "app"', 'database_url_env = "DATABASE_URL"',
                 'image = "127.0.0.1:5000/example-postgres"', 'lock_kind = "requirements"'):
        assert line in settings
    commit_all(repo, "adopted")
    results = verdicts(inv, repo)
    assert failing(results) == [], results
    assert "on a scratch Postgres database" in results["migrations"]["detail"]

    # v2's model without its migration: drift; with it: one head again, no drift.
    shutil.copy(repo / "v2/app/models.py", repo / "app/models.py")
    commit_all(repo, "a column without a migration")
    results = verdicts(inv, repo)
    assert failing(results) == ["migrations"], results
    assert "note" in results["migrations"]["reason"], results["migrations"]
    shutil.copytree(repo / "v2/migrations", repo / "migrations", dirs_exist_ok=True)
    commit_all(repo, "and its migration")
    results = verdicts(inv, repo)
    assert failing(results) == [], results
    assert "one head (0002)" in results["migrations"]["detail"]


# --- (c) a uv workspace, the app in backend/ -----------------------------------------------


@pytest.fixture
def uv_app(tmp_path):
    if not (PY310 / "python3.10").exists():
        pytest.skip("no Python 3.10 here (pyenv)")
    return adopt("uvws", tmp_path)


def test_c_uv_workspace_init_finds_its_shape(uv_app):
    repo, out = uv_app
    assert "service 'app' names its image ${IMAGE}:${TAG}: the deploy sets IMAGE and TAG" in out
    assert "the app reads its database URL from APP_DATABASE_URL" in out
    assert "dependencies: uv (uv.lock)" in out
    assert "migrations run by backend/scripts/prestart.sh" in out
    assert "- host, user, key_file" in out
    settings = (repo / "deploy.toml").read_text()
    for line in ('dockerfile = "backend/Dockerfile"', 'context = "."', 'image_variable = "IMAGE"',
                 'tag_variable = "TAG"', 'alembic_ini = "backend/alembic.ini"',
                 'migrate_command = "sh scripts/prestart.sh"', 'test_dir = "backend"'):
        assert line in settings
    assert (repo / "tasks.py").read_text() == "from deploy.cli.tasks import ns  # noqa: F401\n"
    assert "deploy.cli.fabtasks" in (repo / "fabfile" / "__init__.py").read_text()


def test_c_uv_workspace_passes_from_its_subdirectory(uv_app, inv):
    repo, _ = uv_app
    results = verdicts(inv, repo, cwd=repo / "backend")
    assert failing(results) == [], results
    assert results["python-parity"]["detail"].startswith("Python 3.10: image and app agree")
    assert "uv.lock is up to date (uv)" in results["lock-fresh"]["detail"]


def test_c_uv_lock_stale_then_relocked_with_uv(uv_app, inv):
    repo, _ = uv_app
    edit(repo / "backend" / "pyproject.toml", '"pydantic-settings>=2",',
         '"pydantic-settings>=2",\n    "itsdangerous>=2",')
    commit_all(repo, "a new dependency, not locked")
    result = verdicts(inv, repo)["lock-fresh"]
    assert not result["ok"]
    assert result["reason"].startswith("uv.lock is not up to date with pyproject.toml; uv said:")
    assert "inv lock" in result["fix"]
    before = (repo / "uv.lock").read_text()
    proc = inv(repo, "lock", env=user_env())
    assert proc.returncode == 0, output(proc)
    assert "itsdangerous" in (repo / "uv.lock").read_text() and before != (
        repo / "uv.lock").read_text()
    proc = inv(repo, "lock", "--check", env=user_env())
    assert proc.returncode == 0, output(proc)


def test_c_a_failing_uv_resolution_is_brief(uv_app, inv):
    repo, _ = uv_app
    edit(repo / "backend" / "pyproject.toml", '"pydantic-settings>=2",',
         '"pydantic-settings>=2",\n    "sqlalchemy<1.0",')
    before = (repo / "uv.lock").read_text()
    proc = inv(repo, "lock", env=user_env())
    assert proc.returncode == 1
    assert "error: resolving pyproject.toml failed" in proc.stderr  # the workspace's
    assert "uv.lock is unchanged" in proc.stderr
    assert "sqlalchemy" in proc.stderr.lower()
    assert len(proc.stderr) < 3000, proc.stderr
    assert_no_traceback(proc)
    assert (repo / "uv.lock").read_text() == before


def test_c_the_tool_as_a_uv_tool_on_311_adopts_the_310_app(uv_app, tmp_path):
    """`uv tool install` on Python 3.11: no parity false alarm for the Python 3.10 app."""
    repo, _ = uv_app
    tools = {"UV_TOOL_DIR": str(tmp_path / "tools"), "UV_TOOL_BIN_DIR": str(tmp_path / "bin")}
    uv = str(VENV_BIN / "uv")
    proc = subprocess.run(
        [uv, "tool", "install", "--python", str(Path.home() / ".pyenv/versions/3.11.7/bin/"
                                                 "python3.11"),
         "--with-executables-from", "invoke,fabric", str(REPO)],
        env={**os.environ, **tools}, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.skip(f"uv tool install failed (PyPI?): {proc.stderr[-400:]}")
    (tmp_path / "bin" / "uv").symlink_to(VENV_BIN / "uv")  # the user's own uv
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join([str(tmp_path / "bin"), str(PY310), "/usr/bin", "/bin"])
    proc = subprocess.run([str(tmp_path / "bin" / "inv"), "check"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, output(proc)
    assert "ok   python-parity  Python 3.10" in proc.stdout
    tool_python = next((tmp_path / "tools").glob("deploy-toolkit/bin/python"))
    version = subprocess.run([str(tool_python), "-c", "import sys; print(sys.version[:4])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "3.11"


# --- (d) Poetry + pgvector -----------------------------------------------------------------


@pytest.fixture
def poetry_app(tmp_path, docker_engine):
    if subprocess.run(["docker", "image", "inspect", "pgvector/pgvector:pg17"],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("pgvector/pgvector:pg17 is not in the local engine")
    repo, out = adopt("poetry", tmp_path)
    poetry_install(repo)
    return repo, out


def poetry_install(repo: Path) -> None:
    """`poetry install` on Python 3.11, as the app's developer would have done (in .venv)."""
    from deploy.local.lockkinds import poetry

    env = {**os.environ, **user_env()}
    py311 = str(Path.home() / ".pyenv/versions/3.11.7/bin/python3.11")
    subprocess.run([*poetry(), "env", "use", py311], cwd=repo, env=env, capture_output=True,
                   check=False)
    proc = subprocess.run([*poetry(), "install", "--no-root"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.skip(f"poetry install failed (PyPI?): {proc.stderr[-400:]}")


def test_d_poetry_app_passes_on_a_scratch_pgvector(poetry_app, inv):
    repo, out = poetry_app
    assert "database service 'db' (pgvector/pgvector:pg17): Postgres" in out
    assert "dependencies: poetry (poetry.lock)" in out
    results = verdicts(inv, repo)
    assert failing(results) == [], results
    assert "on a scratch Postgres database" in results["migrations"]["detail"]
    assert "poetry.lock is up to date (poetry)" in results["lock-fresh"]["detail"]


def test_d_poetry_lock_stale(poetry_app, inv):
    repo, _ = poetry_app
    edit(repo / "pyproject.toml", 'pgvector = ">=0.3"', 'pgvector = ">=0.3"\nitsdangerous = ">=2"')
    commit_all(repo, "a new dependency, not locked")
    result = verdicts(inv, repo)["lock-fresh"]
    assert not result["ok"]
    assert result["reason"].startswith("poetry.lock is not up to date with pyproject.toml; "
                                       "poetry said:")


# --- (e) two heads, no lock ----------------------------------------------------------------


def test_e_two_heads_and_no_lock(tmp_path, inv):
    repo = make_example_repo(tmp_path / "e")
    for name in ("deploy.toml", "tasks.py", "requirements.lock"):
        (repo / name).unlink()
    versions = repo / "migrations" / "versions"
    for rev in ("0002a", "0002b"):
        (versions / f"{rev}_branch.py").write_text(
            f'revision = "{rev}"\ndown_revision = "0001"\n\n\n'
            "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n")
    commit_all(repo, "two heads, no lock")
    proc = deploy_init(repo, image="127.0.0.1:5000/corpus-e")
    assert proc.returncode == 0, output(proc)
    assert "no lock yet: run `inv lock`" in proc.stdout
    results = verdicts(inv, repo)
    assert failing(results) == ["lock-fresh", "migrations"], results
    assert results["lock-fresh"]["reason"] == "requirements.lock does not exist"
    assert results["migrations"]["reason"].startswith("2 Alembic heads (")
    assert results["migrations"]["fix"].startswith("merge them: alembic merge -m merge 0002")


# --- inv init never overwrites -------------------------------------------------------------


def test_init_never_overwrites_without_force(tmp_path, inv):
    repo = make_example_repo(tmp_path / "f")
    before = (repo / "deploy.toml").read_text()
    proc = deploy_init(repo)  # deploy.toml and tasks.py kept; the missing fabfile written
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.splitlines() == [
        "wrote: fabfile/__init__.py, .deploy/hooks/pre-build.sample, "
        ".deploy/hooks/pre-deploy.sample, .deploy/hooks/post-deploy.sample, "
        ".deploy/hooks/post-rollback.sample, .deploy/hooks/deploy-failed.sample",
        "kept: deploy.toml (`inv init --force` rewrites it from what it detects)"]
    assert (repo / "deploy.toml").read_text() == before
    assert "deploy.cli.fabtasks" in (repo / "fabfile" / "__init__.py").read_text()
    proc = deploy_init(repo)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: deploy.toml, tasks.py, fabfile/__init__.py already exist; nothing was written",
        "  fix: inv init --force overwrites them"]
    assert (repo / "deploy.toml").read_text() == before
    proc = inv(repo, "init", "--force")
    assert proc.returncode == 0, output(proc)
    assert (repo / "deploy.toml").read_text() != before
    assert (repo / "fabfile" / "__init__.py").exists()


def test_d_inv_test_db_on_a_throwaway_pgvector(poetry_app, inv):
    repo, _ = poetry_app
    # this app's throwaway databases only: other workers' tests start and stop theirs meanwhile
    mine = f"label=deploy-toolkit.scratch.app={repo.resolve()}"
    before = subprocess.run(["docker", "ps", "-aq", "--filter", mine],
                            capture_output=True, text=True, check=True).stdout.split()
    proc = inv(repo, "test", "--db", env=user_env())
    assert proc.returncode == 0, output(proc)
    assert "1 passed" in proc.stdout
    assert "tests get DATABASE_URL = a throwaway Postgres container" in proc.stdout
    after = subprocess.run(["docker", "ps", "-aq", "--filter", mine],
                           capture_output=True, text=True, check=True).stdout.split()
    assert set(after) <= set(before), "the throwaway database was left behind"
    # Without --db too: the app has a database (database = "postgres"), so its tests get a
    # throwaway one, migrated to head.
    proc = inv(repo, "test", env=user_env())
    assert proc.returncode == 0, output(proc)
    assert "tests get DATABASE_URL = a throwaway Postgres container, migrated to head" \
        in proc.stdout


def test_c_the_image_must_install_from_the_uv_lock(uv_app, inv):
    repo, _ = uv_app
    dockerfile = repo / "backend" / "Dockerfile"
    edit(dockerfile, "RUN uv sync --locked", "RUN uv sync")
    commit_all(repo, "uv sync may re-resolve")
    result = verdicts(inv, repo)["lock-fresh"]
    assert not result["ok"] and "`uv sync` without --locked" in result["reason"]
    edit(dockerfile, "RUN uv sync", "RUN uv export --frozen -o r.txt && pip install -r r.txt &&"
                                    " uv sync --locked")
    commit_all(repo, "uv export --frozen")
    result = verdicts(inv, repo)["lock-fresh"]
    assert not result["ok"] and "uv export --frozen" in result["reason"]
    assert result["fix"] == "use `uv export --locked`"


def test_init_says_how_to_fix_a_literal_image_line(tmp_path):
    repo = make_example_repo(tmp_path / "g")
    for name in ("deploy.toml", "tasks.py"):
        (repo / name).unlink()
    edit(repo / "compose.yaml", '"${DEPLOY_IMAGE:-127.0.0.1:5000/example}:${DEPLOY_TAG:-latest}"',
         "myapp:latest")
    proc = deploy_init(repo)
    assert proc.returncode == 0, output(proc)
    assert ("- service 'app' has image myapp:latest: write it as \"${DEPLOY_IMAGE}:${DEPLOY_TAG}\""
            in proc.stdout)
    assert "- image: the registry and name to push to" in proc.stdout
    assert "image_variable" not in (repo / "deploy.toml").read_text()
