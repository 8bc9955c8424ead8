"""Corpus apps adopted with `deploy-init` and deployed to a sandbox VM, upgraded and rolled
back: (c) the uv workspace on its Python 3.10 image, step by step as a
user adopting it would (`inv check`, `inv build`, `inv smoke`, `inv push`, `fab deploy`);
(d) the Poetry + Postgres/pgvector app with `inv deploy`.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest
from conftest import commit_all, git, output
from shapekit import live
from test_checks import edit
from test_corpus import PY310, adopt, poetry_install
from test_envcheck import fab_stdin
from vmkit import Probe


def live_app(name: str, tmp_path: Path, sandbox):
    """The corpus app `name` adopted, pointed at its own app_dir on vm1 and a fresh image
    name; on exit its VM state and its local images are removed."""
    repo, _ = adopt(name, tmp_path)
    if name == "poetry":
        poetry_install(repo)
    yield from live(repo, tmp_path, sandbox)


@pytest.fixture
def poetry_live(tmp_path, sandbox):
    yield from live_app("poetry", tmp_path, sandbox)


@pytest.fixture
def uv_live(tmp_path, sandbox):
    if not (PY310 / "python3.10").exists() or subprocess.run(
            ["docker", "image", "inspect", "python:3.10-slim"], capture_output=True,
            check=False).returncode != 0:
        pytest.skip("no python:3.10-slim (`python -m sandbox up` makes it from pyenv's 3.10)")
    yield from live_app("uvws", tmp_path, sandbox)


def vector_column(app) -> str:
    """The type of notes.embedding in the VM's database, asked from inside the app container."""
    script = ("import os, sqlalchemy as s; e = s.create_engine(os.environ['DATABASE_URL']); "
              "c = e.connect(); print(c.execute(s.text(\"SELECT format_type(atttypid, atttypmod) "
              "FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attname = 'embedding'\"))"
              ".scalar())")
    return app.fab_ok("exec", "--cmd", f"python -c {shlex.quote(script)}")


def test_d_poetry_pgvector_app_deploys_upgrades_and_rolls_back(poetry_live):
    app = poetry_live
    settings = (app.repo / "deploy.toml").read_text()
    assert 'postgres_db = "notes"' in settings and 'postgres_service = "db"' in settings
    app.fab_ok("setup")
    proc = app.inv("deploy", "--skip-tests", timeout=1200)  # its tests need `inv test --db`
    assert proc.returncode == 0, output(proc)
    assert "ok   migrations" in proc.stdout and "scratch Postgres" in proc.stdout
    assert app.version() == {"version": "1"}
    assert "vector(3)" in vector_column(app)
    v1 = app.history()[-1]["tag"]

    edit(app.repo / "app" / "main.py", 'VERSION = "1"', 'VERSION = "2"')
    commit_all(app.repo, "v2")
    proc = app.inv("deploy", "--skip-tests", timeout=1200)
    assert proc.returncode == 0, output(proc)
    assert app.version() == {"version": "2"}

    app.fab_ok("rollback")
    assert app.version() == {"version": "1"}
    assert [e["action"] for e in app.history()] == ["deploy", "deploy", "rollback"]
    assert app.history()[-1]["tag"] == v1
    assert "vector(3)" in vector_column(app)


# --- (c) the uv workspace ------------------------------------------------------------------

SECRET = "k $HOME 'q' \"d\" #h"  # what compose would expand or cut, were it not quoted


def db_container(app) -> str:
    ids = app.vm_docker("ps", "-q", "--filter", f"label=com.docker.compose.project={app.project}",
                        "--filter", "label=com.docker.compose.service=db").stdout.split()
    assert len(ids) == 1, ids
    return app.vm_docker("inspect", "--format", "{{.Id}}", ids[0]).stdout.strip()


def revision(app) -> str:
    proc = app.vm_compose("exec", "-T", "db", "psql", "-U", "app", "-d", "app", "-Atc",
                          "SELECT version_num FROM alembic_version")
    assert proc.returncode == 0, output(proc)
    return proc.stdout.strip()


def add_title_column(repo: Path) -> None:
    """v2: a nullable column (expand only, so v1 keeps working on it) and its migration."""
    backend = repo / "backend"
    edit(backend / "app" / "models.py", "    body: Mapped[str] = mapped_column(String(200))",
         "    body: Mapped[str] = mapped_column(String(200))\n"
         "    title: Mapped[str | None] = mapped_column(String(80), nullable=True)")
    (backend / "migrations" / "versions" / "0002_title.py").write_text(
        '"""a title"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        'revision = "0002"\ndown_revision = "0001"\n\n\ndef upgrade() -> None:\n'
        '    op.add_column("notes", sa.Column("title", sa.String(80), nullable=True))\n\n\n'
        'def downgrade() -> None:\n    op.drop_column("notes", "title")\n')
    edit(backend / "app" / "main.py", 'VERSION = "1"', 'VERSION = "2"')
    commit_all(repo, "v2: notes get a title")


def test_c_uv_workspace_on_python_310_deploys_upgrades_and_rolls_back(uv_live):
    app = uv_live
    settings = (app.repo / "deploy.toml").read_text()
    assert 'image_variable = "IMAGE"' in settings
    assert 'migrate_command = "sh scripts/prestart.sh"' in settings
    assert 'postgres_user = "app"' in settings and 'postgres_db = "app"' in settings
    app.fab_ok("setup")
    proc = fab_stdin(app, SECRET + "\n", "env", "set", "APP_SECRET_KEY")
    assert proc.returncode == 0, output(proc)

    took: dict[str, float] = {}  # the figures in README "Adopting it in an app repo" (-s)
    for step in ("check", "build", "smoke", "push"):
        t0 = time.monotonic()
        proc = app.inv(step, timeout=900)
        took[f"inv {step}"] = time.monotonic() - t0
        assert proc.returncode == 0, f"inv {step}: {output(proc)}"
        if step == "check":
            assert "ok   python-parity  Python 3.10" in proc.stdout
    v1 = git(app.repo, "rev-parse", "--short", "HEAD")
    assert f":{v1}" in proc.stdout  # pushed
    t0 = time.monotonic()
    app.fab_ok("deploy", f"--tag={v1}")
    took["fab deploy (first)"] = time.monotonic() - t0
    assert app.version() == {"version": "1"}
    assert revision(app) == "0001"
    db = db_container(app)
    seen = app.fab_ok("exec", "--cmd", "printenv APP_SECRET_KEY").splitlines()
    assert SECRET in seen  # byte for byte, through `env_file: .env`
    assert "3.10." in app.fab_ok("exec", "--cmd", "python --version")

    add_title_column(app.repo)
    t0 = time.monotonic()
    proc = app.inv("deploy", "--skip-tests", "--skip-check", "env-complete",
                   "--message", "v2: titles", timeout=1200)
    took["inv deploy v2"] = time.monotonic() - t0
    assert proc.returncode == 0, output(proc)
    assert "check env-complete waived (--skip-check env-complete)" in proc.stdout
    assert app.version() == {"version": "2"}
    assert revision(app) == "0002"
    assert db_container(app) == db, "a switch recreated the database service"
    entry = app.history()[-1]
    assert entry["message"] == "v2: titles (waived checks: env-complete)"
    releases = app.fab_ok("releases")
    assert "(v2: titles (waived checks: env-complete))" in releases

    t0 = time.monotonic()
    app.fab_ok("rollback")
    took["fab rollback"] = time.monotonic() - t0
    print("(c) took: " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
    assert app.version() == {"version": "1"}
    assert revision(app) == "0002"  # no --downgrade: v1 runs on the expanded schema
    assert db_container(app) == db
    assert [e["action"] for e in app.history()] == ["deploy", "deploy", "rollback"]
    assert app.history()[-1]["tag"] == v1
    assert SECRET in app.fab_ok("exec", "--cmd", "printenv APP_SECRET_KEY").splitlines()


def test_c_adopted_by_deploy_init_switches_behind_the_proxy_without_a_failed_request(
        uv_live, sandbox):
    """deploy-init's own settings for the uv workspace (proxy = true, app_port and health_path
    from its compose file), its compose file as the template wrote it (a published port,
    `env_file: .env`, no proxy network): behind a Caddy of the test's own, the deploy of v2
    and the rollback fail no request, and nothing was edited by hand but proxy_host."""
    from test_proxy import new_proxy

    app = uv_live
    settings = (app.repo / "deploy.toml").read_text()
    for line in ("proxy = true", "app_port = 8000", 'health_path = "/health"'):
        assert f"\n{line}\n" in settings, settings
    caddy = new_proxy(sandbox)
    try:
        app.proxy = caddy  # requests go to Caddy's port with the app's Host
        app.env.update({"DEPLOY_PROXY_HOST": app.host, "DEPLOY_HEALTH_URL": "",
                        **caddy.settings()})
        del app.env["DEPLOY_PROXY"]  # deploy.toml's, as deploy-init wrote it
        app.fab_ok("setup")
        assert app.vm("compose.yaml").read_text() == (app.repo / "compose.yaml").read_text()
        proc = app.inv("deploy", "--skip-tests", timeout=1200)
        assert proc.returncode == 0, output(proc)
        assert app.version() == {"version": "1"}
        first = app.container_names()
        assert app.vm_docker("port", first[0]).stdout.strip() == ""  # Caddy's port only
        db = db_container(app)

        add_title_column(app.repo)
        with Probe(app, rate=50) as probe:
            proc = app.inv("deploy", "--skip-tests", "--skip-check", "env-complete",
                           timeout=1200)
        assert proc.returncode == 0, output(proc)
        print(f"deploy v2: {probe.summary()}")
        assert probe.failed == [], probe.summary()
        assert probe.versions() == ["1", "2"], probe.summary()
        assert revision(app) == "0002" and db_container(app) == db

        with Probe(app, rate=50) as probe:
            app.fab_ok("rollback")
        print(f"rollback: {probe.summary()}")
        assert probe.failed == [], probe.summary()
        assert probe.versions() == ["2", "1"], probe.summary()
        assert db_container(app) == db
    finally:
        app.tear_down()
        caddy.tear_down()
