"""Corpus shape: an app on Alembic 1.8, before `alembic check` (the uv workspace with alembic
pinned 1.8.1 in its uv.lock). Adopted with `deploy-init` and nothing else, it passes
`inv check`; each breakage planted in it is caught with a message naming the real cause; it
deploys v1 → v2 (a migration) → rollback → restore behind Caddy without a failed request."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import assert_no_traceback, output
from shapekit import add_title, caught, deploy_behind_caddy, live, serve_notes, variant
from test_adopt_shapes import adopted
from test_checks import CHECKS
from test_corpus import PY310


@pytest.fixture
def alembic18(tmp_path, sandbox):
    if not (PY310 / "python3.10").exists() or subprocess.run(
            ["docker", "image", "inspect", "python:3.10-slim"], capture_output=True,
            check=False).returncode != 0:
        pytest.skip("no python:3.10-slim (`python -m sandbox up` makes it from pyenv's 3.10)")
    repo = variant("uvws", "uvws-alembic18", tmp_path)
    serve_notes(repo / "backend/app/main.py", "database_url")
    out = adopted(repo)
    for app in live(repo, tmp_path, sandbox):
        yield app, out


def test_an_alembic_18_app_adopts_checks_catches_breakages_and_deploys(alembic18, sandbox):
    t0 = time.monotonic()
    app, out = alembic18
    assert 'name = "alembic"\nversion = "1.8.1"' in (app.repo / "uv.lock").read_text()
    assert "Alembic: backend/alembic.ini" in out
    assert "migrations run by backend/scripts/prestart.sh" in out
    proc = app.inv("check", timeout=900)
    assert_no_traceback(proc)
    assert proc.returncode == 0, output(proc)
    for name in CHECKS:
        assert f"ok   {name}" in proc.stdout, output(proc)
    assert "models match the migrations" in proc.stdout  # Alembic 1.8 has no `alembic check`
    took = {"adopt+check": time.monotonic() - t0}

    t0 = time.monotonic()
    backend = app.repo / "backend"
    result = caught(app, "python-parity", backend / "Dockerfile", "FROM python:3.10-slim",
                    "FROM python:3.11-slim")
    assert result["reason"].startswith("the image runs Python 3.11 but "), result
    assert "3.10" in result["reason"], result
    result = caught(app, "env-complete", backend / "app/config.py", "    secret_key: str\n",
                    "    secret_key: str\n    sentry_dsn: str\n")
    assert result["reason"] == ("the app's code reads APP_SENTRY_DSN (backend/app/config.py:9) "
                                "without a default, missing from .env.example"), result
    result = caught(app, "migrations", backend / "app/models.py",
                    "    body: Mapped[str] = mapped_column(String(200))\n",
                    "    body: Mapped[str] = mapped_column(String(200))\n"
                    "    title: Mapped[str] = mapped_column(String(80))\n")
    assert result["reason"].startswith("the models differ from the migrations: New upgrade "
                                       "operations detected: [('add_column', None, 'notes', "
                                       "Column('title'"), result
    result = caught(app, "migrate-at-start", app.repo / "compose.yaml",
                    '    image: "${IMAGE}:${TAG}"\n',
                    '    image: "${IMAGE}:${TAG}"\n'
                    '    command: sh -c "sh scripts/prestart.sh && uvicorn app.main:app"\n')
    assert result["reason"].startswith("the compose.yaml service 'app' command runs "
                                       "backend/scripts/prestart.sh, which migrates, at every "
                                       "start"), result
    took["4 breakages"] = time.monotonic() - t0

    took.update(deploy_behind_caddy(
        app, sandbox, lambda: add_title(backend / "app/models.py", backend / "migrations",
                                        backend / "app/main.py"),
        user="app", database="app"))
    print("Alembic 1.8 took: " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
