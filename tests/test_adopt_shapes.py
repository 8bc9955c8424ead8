"""Adopting the shapes real templates have (the corpus apps, each changed the way a template
writes it): migrations at container start, image lines in every interpolation form, an
in-image venv, parity against what the app declares, settings classes across modules, a
database URL built from parts. Fast: deploy-init and the checks that need no Docker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_no_traceback, commit_all, output
from test_checks import edit
from test_corpus import CORPUS, IGNORE, deploy_init, init_repo, user_env

from deploy.local.checks.envcomplete import parse_image_line


def shape(name: str, dest: Path) -> Path:
    """A copy of a corpus app, not yet a git repo nor adopted."""
    repo = dest / name
    shutil.copytree(CORPUS / name, repo, ignore=IGNORE)
    return repo


def adopted(repo: Path) -> str:
    """git init, deploy-init (an image name added), commit; deploy-init's output."""
    init_repo(repo)
    proc = deploy_init(repo, image=f"127.0.0.1:5000/shape-{repo.name}")
    assert proc.returncode == 0, output(proc)
    return proc.stdout


def only(inv, repo: Path, name: str) -> dict:
    proc = inv(repo, "check", "--json", "--only", name, env=user_env())
    assert_no_traceback(proc)
    assert proc.stdout.startswith("["), output(proc)
    result = json.loads(proc.stdout)[0]
    assert proc.returncode == (0 if result["ok"] else 1)
    return result


# --- migrations at container start ---------------------------------------------------------


def test_compose_command_running_a_prestart_script_fails_migrate_at_start(tmp_path, inv):
    repo = shape("uvws", tmp_path)
    edit(repo / "compose.yaml", '    image: "${IMAGE}:${TAG}"\n',
         '    image: "${IMAGE}:${TAG}"\n'
         '    command: sh -c "sh scripts/prestart.sh && uvicorn app.main:app --host 0.0.0.0"\n')
    out = adopted(repo)
    assert ("warning: the compose.yaml service 'app' command runs migrations at every start "
            "(backend/scripts/prestart.sh)") in out
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert result["reason"].startswith("the compose.yaml service 'app' command runs "
                                       "backend/scripts/prestart.sh, which migrates, at every "
                                       "start: a rollback would start the older release")
    assert result["fix"].startswith("remove the call of backend/scripts/prestart.sh from the "
                                    "compose.yaml service 'app' command; ")
    assert "migrate_command = " in result["fix"]


def test_dockerfile_cmd_running_alembic_fails_and_removing_it_passes(tmp_path, inv):
    repo = shape("poetry", tmp_path)
    edit(repo / "Dockerfile", 'CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", '
         '"8000"]', 'CMD ["sh", "-c", "alembic upgrade head && uvicorn app.main:app --host '
         '0.0.0.0"]')
    out = adopted(repo)
    assert "warning: the Dockerfile CMD runs migrations at every start" in out
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert "the Dockerfile CMD runs `alembic upgrade` at every start" in result["reason"]
    assert result["fix"].startswith("remove the `alembic upgrade` from the Dockerfile CMD; ")
    assert 'migrate_command = "alembic upgrade head"' in result["fix"]
    edit(repo / "Dockerfile", '"alembic upgrade head && uvicorn', '"uvicorn')
    commit_all(repo, "migrations only through migrate_command")
    result = only(inv, repo, "migrate-at-start")
    assert result["ok"], result
    assert result["detail"] == "no `alembic upgrade` when the container starts"


def test_an_entrypoint_script_in_the_image_that_migrates(tmp_path, inv):
    repo = shape("poetry", tmp_path)
    (repo / "docker-entrypoint.sh").write_text(
        "#!/bin/sh\nset -e\npython -m alembic -c alembic.ini upgrade head\nexec \"$@\"\n")
    edit(repo / "Dockerfile", "COPY app/ ./app/\n",
         "COPY app/ ./app/\nCOPY docker-entrypoint.sh /usr/local/bin/\n"
         'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\n')
    adopted(repo)
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert result["reason"].startswith("the Dockerfile ENTRYPOINT runs docker-entrypoint.sh, "
                                       "which migrates")


def test_the_unchanged_corpus_apps_do_not_migrate_at_start(tmp_path, inv):
    for name in ("uvws", "poetry"):
        repo = shape(name, tmp_path)
        out = adopted(repo)
        assert "warning:" not in out
        assert only(inv, repo, "migrate-at-start")["ok"]


# --- image lines in every interpolation form ------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("${DEPLOY_IMAGE}:${DEPLOY_TAG}", ("DEPLOY_IMAGE", "DEPLOY_TAG", "", "")),
    ("${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}",
     ("DOCKER_IMAGE_BACKEND", "TAG", "", "latest")),
    ("${IMAGE:?set IMAGE: the registry}:${TAG:?}", ("IMAGE", "TAG", "", "")),
    ("${IMAGE:-127.0.0.1:5000/app}:${TAG:-v1}", ("IMAGE", "TAG", "127.0.0.1:5000/app", "v1")),
    ("${IMAGE-reg/app}:$TAG", ("IMAGE", "TAG", "reg/app", "")),
    ("$IMAGE:$TAG", ("IMAGE", "TAG", "", "")),
])
def test_image_line_forms(line, expected):
    parsed = parse_image_line(line)
    assert parsed is not None
    assert (parsed.repo_variable, parsed.tag_variable, parsed.repo_default,
            parsed.tag_default) == expected


@pytest.mark.parametrize("line", ["myapp:latest", "reg/${IMAGE}:${TAG}", "${IMAGE}", "$$IMAGE:x"])
def test_image_lines_that_are_not_two_variables(line):
    assert parse_image_line(line) is None


def test_init_reads_a_template_image_line_without_asking_for_a_rewrite(tmp_path, inv):
    repo = shape("uvws", tmp_path)
    edit(repo / "compose.yaml", 'image: "${IMAGE}:${TAG}"',
         "image: '${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}'")
    out = adopted(repo)
    assert "write it as" not in out
    assert ("names its image ${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}: the "
            "deploy sets DOCKER_IMAGE_BACKEND and TAG on the VM") in out
    settings = (repo / "deploy.toml").read_text()
    assert 'image_variable = "DOCKER_IMAGE_BACKEND"' in settings
    assert 'tag_variable = "TAG"' in settings
    # The deploy sets both variables: .env.example need not declare them.
    assert only(inv, repo, "env-complete")["ok"]


# --- the image's own environment -----------------------------------------------------------

POETRY_IN_PROJECT = """FROM python:3.9-slim
WORKDIR /app
RUN pip install --no-cache-dir "poetry>=2,<3" && poetry config virtualenvs.in-project true
COPY pyproject.toml poetry.lock ./
RUN poetry install --only main --no-root
COPY alembic.ini ./
COPY migrations/ ./migrations/
COPY app/ ./app/
CMD ["/app/.venv/bin/uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
"""


@pytest.mark.parametrize("text, python, prefix", [
    (POETRY_IN_PROJECT, "/app/.venv/bin/python", "PATH=/app/.venv/bin:$PATH "),
    ("FROM python:3.9-slim\nENV POETRY_VIRTUALENVS_IN_PROJECT=true\nWORKDIR /srv\n"
     "RUN poetry install\n", "/srv/.venv/bin/python", "PATH=/srv/.venv/bin:$PATH "),
    ("FROM python:3.9-slim\nWORKDIR /app\nRUN poetry install\n", "poetry run python",
     "poetry run "),
    ("FROM python:3.9-slim\nRUN poetry config virtualenvs.create false && poetry install\n",
     "python", ""),
    ("FROM python:3.12-slim\nWORKDIR /app\nRUN uv sync --locked\n", "/app/.venv/bin/python",
     "PATH=/app/.venv/bin:$PATH "),
    ("FROM python:3.12-slim\nWORKDIR /app\nRUN uv sync --locked\n"
     "ENV PATH=\"/app/.venv/bin:$PATH\"\n", "python", ""),
    ("FROM python:3.12-slim\nRUN python -m venv /opt/venv\nENV VIRTUAL_ENV=/opt/venv\n",
     "/opt/venv/bin/python", "PATH=/opt/venv/bin:$PATH "),
    ("FROM python:3.12 AS build\nRUN python3 -m venv /venv\nFROM python:3.12-slim\n"
     "COPY --from=build /venv /venv\nENV PATH=/venv/bin:$PATH\n", "python", ""),
    ("FROM python:3.12-slim\nRUN pip install -r requirements.lock\n", "python", ""),
])
def test_the_images_own_environment(tmp_path, text, python, prefix):
    from deploy.local import dockerfile

    (tmp_path / "Dockerfile").write_text(text)
    found = dockerfile.image_env(dockerfile.parse(tmp_path / "Dockerfile"))
    assert found.command("python") == python
    assert found.shell_prefix() == prefix


def test_init_writes_smoke_and_migrate_for_a_poetry_in_project_venv(tmp_path):
    repo = shape("poetry", tmp_path)
    (repo / "Dockerfile").write_text(POETRY_IN_PROJECT)
    out = adopted(repo)
    assert ("the image installs the app's packages into /app/.venv, not on its PATH: smoke "
            "and migrate run `/app/.venv/bin/python`") in out
    # the deploy's own `alembic current`/`downgrade` start alembic as migrate_command does:
    # nothing to add to the Dockerfile
    assert "ENV PATH" not in out
    settings = (repo / "deploy.toml").read_text()
    assert ('smoke_command = "/app/.venv/bin/python -c \\"from app.main import app; '
            "print('OK')\\\"\"") in settings
    assert 'migrate_command = "PATH=/app/.venv/bin:$PATH alembic upgrade head"' in settings


def test_smoke_runs_the_venv_python_init_wrote(tmp_path, inv, base_image):
    """An image whose packages live in a venv off PATH: bare `python` lacks them (the old
    default's false alarm); the smoke command deploy-init writes finds them."""
    repo = tmp_path / "venvapp"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "__init__.py").write_text("")
    (repo / "app" / "main.py").write_text("from fastapi import FastAPI\n\napp = FastAPI()\n")
    (repo / "fastapi").mkdir()  # stands in for the installed package (no PyPI in a build)
    (repo / "fastapi" / "__init__.py").write_text("class FastAPI:\n    pass\n")
    (repo / "Dockerfile").write_text(
        "FROM python:3.11-slim\nWORKDIR /app\nRUN python -m venv /app/.venv\n"
        "COPY fastapi/ /app/.venv/lib/python3.11/site-packages/fastapi/\nCOPY app/ ./app/\n"
        'CMD ["/app/.venv/bin/python", "-c", "import app.main"]\n')
    (repo / "compose.yaml").write_text(
        'services:\n  app:\n    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"\n')
    (repo / ".env.example").write_text("X=1\n")
    (repo / ".dockerignore").write_text(".git\n.env\n")
    out = adopted(repo)
    assert "smoke and migrate run `/app/.venv/bin/python`" in out
    proc = inv(repo, "build", "--version", "venv1")
    assert proc.returncode == 0, output(proc)
    proc = inv(repo, "smoke", "--version", "venv1")
    assert proc.returncode == 0, output(proc)
    assert "smoke: OK" in proc.stdout
    # The default smoke command (bare python) is what reported a missing module.
    settings = repo / "deploy.toml"
    settings.write_text("\n".join(line for line in settings.read_text().splitlines()
                                  if not line.startswith("smoke_command")) + "\n")
    proc = inv(repo, "smoke", "--version", "venv1")
    assert proc.returncode == 1
    assert ("the image lacks the module 'fastapi' for bare `python`; the image installs the "
            "app's packages into /app/.venv, which `python` does not see") in proc.stderr
    assert 'fix: set smoke_command = "/app/.venv/bin/python -c' in proc.stderr


# --- parity against what the app declares --------------------------------------------------


def fake_venv(repo: Path, version: str) -> None:
    """A .venv as `uv run`/`poetry run` leave it (pyvenv.cfg names its Python)."""
    import sys

    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (repo / ".venv" / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion_info = {version}.7\n")


def test_parity_ignores_a_venv_of_another_python(tmp_path, inv):
    """The image and .python-version say 3.10; a .venv made with 3.11 (by a tool) is no
    declaration of the app."""
    repo = shape("uvws", tmp_path)
    adopted(repo)
    fake_venv(repo, "3.11")
    result = only(inv, repo, "python-parity")
    assert result["ok"], result
    assert result["detail"].startswith("Python 3.10: image and app agree (.python-version")


def test_parity_against_poetrys_python_range(tmp_path, inv):
    """`python = "^3.9"` and no other declaration: an image moved to 3.11 fails, even with a
    3.11 venv next to the app; on 3.9 it passes."""
    repo = shape("poetry", tmp_path)
    edit(repo / "pyproject.toml", 'python = "^3.11"', 'python = "^3.9"')
    adopted(repo)
    fake_venv(repo, "3.11")
    result = only(inv, repo, "python-parity")
    assert not result["ok"]
    assert result["reason"] == (
        "the image runs Python 3.11 but the app declares only Poetry's python = '^3.9', whose "
        "lowest Python is 3.9: nothing says the app runs on 3.11")
    assert result["fix"].startswith("use python:3.9 in the Dockerfile's FROM, or declare")
    edit(repo / "Dockerfile", "FROM python:3.11-slim", "FROM python:3.9-slim")
    commit_all(repo, "back on 3.9")
    result = only(inv, repo, "python-parity")
    assert result["ok"], result
    (repo / ".python-version").write_text("3.11\n")
    edit(repo / "Dockerfile", "FROM python:3.9-slim", "FROM python:3.11-slim")
    commit_all(repo, "developed on 3.11, said so")
    assert only(inv, repo, "python-parity")["ok"]


def test_the_tools_uv_run_creates_the_env_for_the_images_python(tmp_path):
    from deploy.core.settings import load_settings
    from deploy.local import apppython

    repo = shape("uvws", tmp_path)
    adopted(repo)
    app = apppython.app_python(load_settings(repo, environ={}))
    assert app.kind == "uv"
    assert app.argv[1:5] == ("run", "--locked", "--python", "3.10")


def test_poetry_env_for_an_image_python_that_is_not_here_says_which_to_install(tmp_path, inv):
    from test_corpus import VENV_BIN

    repo = shape("poetry", tmp_path)
    edit(repo / "pyproject.toml", 'python = "^3.11"', 'python = "^3.8"')
    edit(repo / "Dockerfile", "FROM python:3.11-slim", "FROM python:3.8-slim")
    adopted(repo)
    env = {**user_env(), "PATH": f"{VENV_BIN}:/usr/bin:/bin",
           "POETRY_VIRTUALENVS_PATH": str(tmp_path / "poetry-envs")}
    proc = inv(repo, "test", env=env)
    assert proc.returncode == 1, output(proc)
    assert ("error: the app's Poetry project has no environment yet, and Python 3.8 (the "
            "image's) is not on PATH to create it with") in proc.stderr
    assert "fix: install Python 3.8 (e.g. `pyenv install 3.8`" in proc.stderr
    assert not (repo / ".venv").exists()
    assert not (tmp_path / "poetry-envs").exists() or not any(
        (tmp_path / "poetry-envs").iterdir())


# --- settings classes across modules -------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.mark.parametrize("prefix_line", [
    '    model_config = SettingsConfigDict(env_prefix="APP_")\n',
    '    class Config:\n        env_prefix = "APP_"\n',
])
def test_env_reads_follow_a_settings_base_class_into_another_module(tmp_path, prefix_line):
    from deploy.local.codevars import app_env_reads

    write_tree(tmp_path, {
        "app/__init__.py": "",
        "app/core/__init__.py": "",
        "app/core/base.py": (
            "from pydantic_settings import BaseSettings\n\n\n"
            "class CommonSettings(BaseSettings):\n    database_url: str\n"
            "    debug: bool = False\n"),
        "app/core/config.py": (
            "from pydantic_settings import SettingsConfigDict\n\n"
            "from .base import CommonSettings\n\n\n"
            f"class ProductionSettings(CommonSettings):\n{prefix_line}"
            "    sentry_dsn: str\n    debug: bool = True\n\n\n"
            "settings = ProductionSettings()\n"),
    })
    reads = {r.name: (r.required, r.where) for r in app_env_reads(tmp_path)}
    assert reads == {
        "APP_DATABASE_URL": (True, "app/core/base.py:5"),
        "APP_DEBUG": (False, "app/core/config.py:" + ("9" if "model_config" in prefix_line
                                                       else "10")),
        "APP_SENTRY_DSN": (True, "app/core/config.py:" + ("8" if "model_config" in prefix_line
                                                           else "9")),
    }


def test_env_reads_follow_an_absolute_import_and_a_module_alias(tmp_path):
    from deploy.local.codevars import app_env_reads

    write_tree(tmp_path, {
        "backend/app/__init__.py": "",
        "backend/app/base.py": (
            "from pydantic_settings import BaseSettings, SettingsConfigDict\n\n\n"
            "class Base(BaseSettings):\n"
            "    model_config = SettingsConfigDict(env_prefix='SVC_')\n    token: str\n"),
        "backend/app/config.py": (
            "from app import base as b\n\n\nclass Settings(b.Base):\n    region: str = 'x'\n"),
        "backend/app/other.py": (
            "from app.base import Base as Parent\n\n\nclass Worker(Parent):\n"
            "    queue: str\n"),
    })
    reads = {r.name: r.required for r in app_env_reads(tmp_path)}
    assert reads == {"SVC_TOKEN": True, "SVC_REGION": False, "SVC_QUEUE": True}


def test_a_required_field_of_a_subclass_in_another_module_fails_env_complete(tmp_path, inv):
    repo = shape("uvws", tmp_path)
    (repo / "backend/app/settings_base.py").write_text(
        "from pydantic_settings import BaseSettings\n\n\nclass AppBase(BaseSettings):\n"
        "    database_url: str\n    secret_key: str\n    debug: bool = False\n")
    (repo / "backend/app/config.py").write_text(
        "from pydantic_settings import SettingsConfigDict\n\n"
        "from app.settings_base import AppBase\n\n\nclass Settings(AppBase):\n"
        '    model_config = SettingsConfigDict(env_prefix="APP_", env_file=".env")\n\n'
        "    sentry_dsn: str\n\n\nsettings = Settings()\n")
    out = adopted(repo)
    assert "the app reads its database URL from APP_DATABASE_URL" in out
    result = only(inv, repo, "env-complete")
    assert not result["ok"]
    assert result["reason"] == ("the app's code reads APP_SENTRY_DSN (backend/app/config.py:9) "
                                "without a default, missing from .env.example")


# --- a database URL built from parts --------------------------------------------------------

TEMPLATE_CONFIG = '''from pydantic import computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    SECRET_KEY: str
    POSTGRES_SERVER: str
    POSTGRES_PORT: int = 5432
    POSTGRES_USER: str
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def SQLALCHEMY_DATABASE_URI(self) -> str:
        return (f"postgresql+psycopg://{self.POSTGRES_USER}:{self.POSTGRES_PASSWORD}@"
                f"{self.POSTGRES_SERVER}:{self.POSTGRES_PORT}/{self.POSTGRES_DB}")


settings = Settings()
'''


def template_shape(dest: Path) -> Path:
    """The uv workspace as the full-stack template writes it: the URL built from parts."""
    repo = shape("uvws", dest)
    (repo / "backend/app/config.py").write_text(TEMPLATE_CONFIG)
    edit(repo / "backend/app/main.py", "settings.secret_key", "settings.SECRET_KEY")
    edit(repo / "backend/migrations/env.py", "settings.database_url",
         "settings.SQLALCHEMY_DATABASE_URI")
    (repo / ".env.example").write_text(
        "SECRET_KEY=change-me\nPOSTGRES_SERVER=db\nPOSTGRES_PORT=5432\nPOSTGRES_USER=app\n"
        "POSTGRES_PASSWORD=change-me\nPOSTGRES_DB=app\nAPP_PORT=8000\n")
    return repo


def test_init_finds_the_database_url_parts(tmp_path):
    repo = template_shape(tmp_path)
    out = adopted(repo)
    assert ("the app builds its database URL from POSTGRES_SERVER, POSTGRES_PORT, POSTGRES_USER, "
            "POSTGRES_PASSWORD, POSTGRES_DB") in out
    assert "reads no *DATABASE_URL" not in out
    settings = (repo / "deploy.toml").read_text()
    assert ('database_env = {host = "POSTGRES_SERVER", port = "POSTGRES_PORT", user = '
            '"POSTGRES_USER", password = "POSTGRES_PASSWORD", name = "POSTGRES_DB"}') in settings
    assert 'postgres_user = "app"' in settings and 'postgres_db = "app"' in settings
    from deploy.core.settings import load_settings

    loaded = load_settings(repo, environ={})
    assert loaded.database_env == {"host": "POSTGRES_SERVER", "port": "POSTGRES_PORT",
                                   "user": "POSTGRES_USER", "password": "POSTGRES_PASSWORD",
                                   "name": "POSTGRES_DB"}


@pytest.mark.parametrize("db_env, example, user, name", [
    # the image's defaults: user postgres, the database named as the user (never "app")
    ('      POSTGRES_PASSWORD: "${POSTGRES_PASSWORD}"\n', "POSTGRES_PASSWORD=x\n",
     "postgres", "postgres"),
    ('      POSTGRES_USER: "${PGUSER:-svc}"\n', "", "svc", "svc"),
    ('      POSTGRES_PASSWORD: x\n',
     "DATABASE_URL=postgresql+psycopg://notes_user:pw@db:5432/notes\n", "notes_user", "notes"),
    ('      POSTGRES_DB: "${DB_NAME}"\n', "DB_NAME=main\n", "postgres", "main"),
    # the full-stack template's list form, every value required with ${V?msg}
    ("      - POSTGRES_PASSWORD=${POSTGRES_PASSWORD?Variable not set}\n"
     "      - POSTGRES_USER=${POSTGRES_USER?Variable not set}\n"
     "      - POSTGRES_DB=${POSTGRES_DB?Variable not set}\n",
     "POSTGRES_USER=tmpl\nPOSTGRES_PASSWORD=x\nPOSTGRES_DB=tmpl_db\n", "tmpl", "tmpl_db"),
    ('      POSTGRES_DB: "${DB_NAME:-}"\n      POSTGRES_USER: "$$literal"\n', "",
     "$literal", "$literal"),
])
def test_init_reads_postgres_user_and_db(tmp_path, db_env, example, user, name):
    repo = tmp_path / "pg"
    write_tree(repo, {
        "compose.yaml": ("services:\n  db:\n    image: postgres:17\n    environment:\n"
                         f"{db_env}  app:\n    image: \"${{DEPLOY_IMAGE}}:${{DEPLOY_TAG}}\"\n"),
        ".env.example": example or "X=1\n",
    })
    proc = deploy_init(repo)
    assert proc.returncode == 0, output(proc)
    settings = (repo / "deploy.toml").read_text()
    assert f'postgres_user = "{user}"' in settings
    assert f'postgres_db = "{name}"' in settings


@pytest.mark.parametrize("value", [{"hots": "A", "name": "B"}, {"host": "A"},
                                   {"host": "A B", "name": "C"}])
def test_a_bad_database_env_is_refused(tmp_path, inv, value):
    from deploy.local.init import toml_value

    repo = tmp_path / "bad"
    repo.mkdir()
    (repo / "deploy.toml").write_text(f"database_env = {toml_value(value)}\n")
    (repo / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
    proc = inv(repo, "config")
    assert proc.returncode == 1
    assert "error: setting 'database_env' in deploy.toml must map host, port, user, " in proc.stderr
    assert 'fix: fix it, e.g. database_env = {host = "POSTGRES_SERVER"' in proc.stderr


def test_migrations_and_inv_test_db_pass_the_scratch_database_in_parts(tmp_path, inv,
                                                                     docker_engine):
    """The template's app (URL from POSTGRES_*) on a scratch postgres:17: the migrations check
    reaches it through the parts; `inv test --db` passes them to the tests too."""
    from test_corpus import PY310

    if not (PY310 / "python3.10").exists():
        pytest.skip("no Python 3.10 here (pyenv)")
    repo = template_shape(tmp_path)
    (repo / "backend/tests/test_health.py").write_text(
        "import os\n\nfrom sqlalchemy import create_engine, text\n\n"
        "from app.config import settings\n\n\n"
        "def test_the_scratch_database():\n"
        "    assert os.environ['POSTGRES_DB'] == 'scratch'\n"
        "    with create_engine(settings.SQLALCHEMY_DATABASE_URI).connect() as conn:\n"
        "        assert conn.execute(text('select current_database()')).scalar() == 'scratch'\n")
    (repo / ".env").write_text((repo / ".env.example").read_text().replace(
        "POSTGRES_SERVER=db", "POSTGRES_SERVER=db.invalid"))
    adopted(repo)
    result = only(inv, repo, "migrations")
    assert result["ok"], result
    assert "on a scratch Postgres database" in result["detail"]
    proc = inv(repo, "test", "--db", env=user_env({"SECRET_KEY": "test"}))
    assert proc.returncode == 0, output(proc)
    assert ("tests get POSTGRES_SERVER, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, "
            "POSTGRES_DB = a throwaway Postgres container") in proc.stdout
    assert "1 passed" in proc.stdout


# --- smaller ones ----------------------------------------------------------------------------


def test_init_with_only_a_deploy_toml_writes_tasks_and_fabfile(tmp_path):
    repo = shape("poetry", tmp_path)
    (repo / "deploy.toml").write_text('image = "127.0.0.1:5000/mine"\n')
    proc = deploy_init(repo)
    assert proc.returncode == 0, output(proc)
    assert "wrote: tasks.py, fabfile/__init__.py" in proc.stdout
    assert (repo / "deploy.toml").read_text() == 'image = "127.0.0.1:5000/mine"\n'
    assert (repo / "tasks.py").read_text() == "from deploy.cli.tasks import ns  # noqa: F401\n"
    assert "deploy.cli.fabtasks" in (repo / "fabfile" / "__init__.py").read_text()


def test_smoke_after_build_with_a_version_smokes_that_version(example_repo, inv, base_image):
    proc = inv(example_repo, "build", "--version", "v1")
    assert proc.returncode == 0, output(proc)
    proc = inv(example_repo, "smoke", "--verbose")
    assert proc.returncode == 0, output(proc)
    assert "example:v1 " in proc.stdout + proc.stderr
    assert "there is no local image" not in proc.stderr
    commit_all(example_repo, "a new commit: the v1 build is not of it")
    proc = inv(example_repo, "smoke")
    assert proc.returncode == 1
    assert "there is no local image" in proc.stderr


def test_a_stale_poetry_lock_shows_poetrys_error_without_its_deprecation_noise(tmp_path, inv):
    repo = shape("poetry", tmp_path)
    adopted(repo)
    edit(repo / "pyproject.toml", 'pgvector = ">=0.3"', 'pgvector = ">=0.3"\nitsdangerous = ">=2"')
    commit_all(repo, "a new dependency, not locked")
    result = only(inv, repo, "lock-fresh")
    assert not result["ok"]
    assert result["reason"] == (
        "poetry.lock is not up to date with pyproject.toml; poetry said:\n"
        "  Error: pyproject.toml changed significantly since poetry.lock was last generated. "
        "Run `poetry lock` to fix the lock file.")


def test_a_prestart_service_on_the_apps_image_fails_migrate_at_start(tmp_path, inv):
    """The full-stack template's shape: a `prestart` service on the backend's image runs the
    migrating script before the backend starts, at every `compose up`."""
    repo = shape("uvws", tmp_path)
    image = "'${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}'"
    edit(repo / "compose.yaml", '  app:\n    image: "${IMAGE}:${TAG}"\n',
         f"  prestart:\n    image: {image}\n    env_file: .env\n"
         "    command: bash scripts/prestart.sh\n"
         f"  app:\n    image: {image}\n")
    out = adopted(repo)
    assert "warning: the compose.yaml service 'prestart' command runs migrations" in out
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert result["reason"].startswith("the compose.yaml service 'prestart' command runs "
                                       "backend/scripts/prestart.sh, which migrates, at every "
                                       "start")


def test_a_first_poetry_run_creates_the_env_for_the_images_python(tmp_path, inv):
    """Python 3.11 first on PATH, the image on 3.10: the env the tool's `poetry run` needs is
    made with 3.10 (Poetry alone would take 3.11)."""
    from test_corpus import PY310, VENV_BIN

    if not (PY310 / "python3.10").exists():
        pytest.skip("no Python 3.10 here (pyenv)")
    repo = shape("poetry", tmp_path)
    edit(repo / "pyproject.toml", 'python = "^3.11"', 'python = "^3.10"')
    edit(repo / "Dockerfile", "FROM python:3.11-slim", "FROM python:3.10-slim")
    adopted(repo)
    py311 = Path.home() / ".pyenv/versions/3.11.7/bin"
    env = {**user_env(), "PATH": f"{VENV_BIN}:{py311}:{PY310}:/usr/bin:/bin"}
    inv(repo, "test", env=env)  # the empty env has no pytest: what matters is its Python
    cfg = (repo / ".venv" / "pyvenv.cfg").read_text()
    assert "version_info = 3.10." in cfg or "version = 3.10." in cfg, cfg
    assert only(inv, repo, "python-parity")["ok"]
