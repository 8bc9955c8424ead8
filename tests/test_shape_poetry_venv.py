"""Corpus shape: a Poetry app whose image keeps its packages in an in-project venv
(`virtualenvs.in-project`, /app/.venv, off PATH), whose CMD migrates before the server starts,
and whose settings class extends a base class in another module. Adopted with `deploy-init`,
the migrating CMD is caught and fixed as the check says, a planted breakage caught, and it
deploys behind Caddy without a failed request."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import assert_no_traceback, commit_all, output
from shapekit import add_title, caught, check, deploy_behind_caddy, live, serve_notes, variant
from test_adopt_shapes import adopted
from test_checks import CHECKS, edit
from test_corpus import poetry_install

MIGRATING_CMD = ('CMD ["sh", "-c", "/app/.venv/bin/alembic upgrade head && exec '
                 '/app/.venv/bin/uvicorn app.main:app --host 0.0.0.0 --port 8000"]')
CMD = 'CMD ["/app/.venv/bin/uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]'


@pytest.fixture
def poetry_venv(tmp_path, sandbox):
    if subprocess.run(["docker", "image", "inspect", "pgvector/pgvector:pg17"],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("pgvector/pgvector:pg17 is not in the local engine")
    repo = variant("poetry", "poetry-venv", tmp_path)
    serve_notes(repo / "app/main.py", "database_url")
    out = adopted(repo)
    poetry_install(repo)
    for app in live(repo, tmp_path, sandbox):
        yield app, out


def test_a_poetry_in_project_venv_app_adopts_checks_catches_breakages_and_deploys(
        poetry_venv, sandbox):
    t0 = time.monotonic()
    app, out = poetry_venv
    assert ("the image installs the app's packages into /app/.venv, not on its PATH: smoke "
            "and migrate run `/app/.venv/bin/python`") in out
    assert "the app reads its database URL from DATABASE_URL" in out  # the base class's field
    assert "warning: the Dockerfile CMD runs migrations at every start" in out
    settings = (app.repo / "deploy.toml").read_text()
    assert 'migrate_command = "PATH=/app/.venv/bin:$PATH alembic upgrade head"' in settings

    # as found, the image migrates at every start; the check says so, and what to do
    result = check(app, "migrate-at-start")
    assert not result["ok"]
    assert result["reason"].startswith("the Dockerfile CMD runs `alembic upgrade` at every "
                                       "start"), result
    assert result["fix"].startswith("remove the `alembic upgrade` from the Dockerfile CMD; "), \
        result
    edit(app.repo / "Dockerfile", MIGRATING_CMD, CMD)
    commit_all(app.repo, "migrations only through migrate_command")
    proc = app.inv("check", timeout=900)
    assert_no_traceback(proc)
    assert proc.returncode == 0, output(proc)
    for name in CHECKS:
        assert f"ok   {name}" in proc.stdout, output(proc)
    assert "models match the migrations" in proc.stdout
    took = {"adopt+check": time.monotonic() - t0}

    t0 = time.monotonic()
    result = caught(app, "env-complete", app.repo / "app/settings_base.py",
                    "    database_url: str\n", "    database_url: str\n    sentry_dsn: str\n")
    assert result["reason"] == ("the app's code reads SENTRY_DSN (app/settings_base.py:8) "
                                "without a default, missing from .env.example"), result
    took["1 breakage"] = time.monotonic() - t0

    took.update(deploy_behind_caddy(
        app, sandbox, lambda: add_title(app.repo / "app/db.py", app.repo / "migrations",
                                        app.repo / "app/main.py"),
        user="postgres", database="notes"))
    print("Poetry in-project venv took: " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
