"""Corpus shape: the full-stack template's backend (the uv workspace as it writes it): the
database URL a computed pydantic field built from POSTGRES_SERVER/PORT/USER/PASSWORD/DB, and
the image line `'${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}'`. Adopted with
`deploy-init`, checked, breakages caught, deployed behind Caddy without a failed request."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import assert_no_traceback, output
from shapekit import add_title, caught, deploy_behind_caddy, live, serve_notes
from test_adopt_shapes import adopted, template_shape
from test_checks import CHECKS, edit
from test_corpus import PY310

IMAGE_LINE = "'${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}'"


@pytest.fixture
def template(tmp_path, sandbox):
    if not (PY310 / "python3.10").exists() or subprocess.run(
            ["docker", "image", "inspect", "python:3.10-slim"], capture_output=True,
            check=False).returncode != 0:
        pytest.skip("no python:3.10-slim (`python -m sandbox up` makes it from pyenv's 3.10)")
    repo = template_shape(tmp_path)
    edit(repo / "compose.yaml", 'image: "${IMAGE}:${TAG}"', f"image: {IMAGE_LINE}")
    serve_notes(repo / "backend/app/main.py", "SQLALCHEMY_DATABASE_URI")
    out = adopted(repo)
    for app in live(repo, tmp_path, sandbox):
        yield app, out


def test_the_templates_backend_adopts_checks_catches_breakages_and_deploys(template, sandbox):
    t0 = time.monotonic()
    app, out = template
    assert ("the app builds its database URL from POSTGRES_SERVER, POSTGRES_PORT, POSTGRES_USER, "
            "POSTGRES_PASSWORD, POSTGRES_DB") in out
    assert ("names its image ${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}: the "
            "deploy sets DOCKER_IMAGE_BACKEND and TAG on the VM") in out
    proc = app.inv("check", timeout=900)
    assert_no_traceback(proc)
    assert proc.returncode == 0, output(proc)
    for name in CHECKS:
        assert f"ok   {name}" in proc.stdout, output(proc)
    assert "models match the migrations" in proc.stdout
    took = {"adopt+check": time.monotonic() - t0}

    t0 = time.monotonic()
    result = caught(app, "env-complete", app.repo / ".env.example", "POSTGRES_SERVER=db\n", "")
    assert result["reason"] == ("the app's code reads POSTGRES_SERVER (backend/app/config.py:9) "
                                "without a default, missing from .env.example"), result
    backend = app.repo / "backend"
    # the scratch database reaches the app through the parts, so the drift is seen
    result = caught(app, "migrations", backend / "app/models.py",
                    "    body: Mapped[str] = mapped_column(String(200))\n",
                    "    body: Mapped[str] = mapped_column(String(200))\n"
                    "    title: Mapped[str] = mapped_column(String(80))\n")
    assert result["reason"].startswith("the models differ from the migrations: New upgrade "
                                       "operations detected: [('add_column', None, 'notes', "
                                       "Column('title'"), result
    took["2 breakages"] = time.monotonic() - t0

    took.update(deploy_behind_caddy(
        app, sandbox, lambda: add_title(backend / "app/models.py", backend / "migrations",
                                        backend / "app/main.py"),
        user="app", database="app"))
    print("template shape took: " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
