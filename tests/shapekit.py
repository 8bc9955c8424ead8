"""What the corpus shape tests share: a corpus app with a variant laid over it, a planted
breakage that `inv check` must name, and the deploy behind Caddy that ends each test
(v1 → v2 with a migration → rollback → restore, under a probe)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import assert_no_traceback, output
from test_corpus import CORPUS, IGNORE, user_env
from test_maintenance import only_pages_and_answers
from vmkit import App, Probe, unique

from sandbox import Sandbox


def variant(base: str, overlay: str, dest: Path) -> Path:
    """A copy of the corpus app `base` with the files of tests/corpus/`overlay` over it (not
    yet a git repo nor adopted)."""
    repo = dest / base
    shutil.copytree(CORPUS / base, repo, ignore=IGNORE)
    if overlay:
        shutil.copytree(CORPUS / overlay, repo, dirs_exist_ok=True)
    return repo


def live(repo: Path, tmp_path: Path, sandbox: Sandbox) -> Iterator[App]:
    """The adopted `repo` pointed at its own app_dir on vm1 and a fresh image name; on exit its
    VM state and its local images are removed."""
    image = f"127.0.0.1:5000/{unique(f'corpus-{repo.name}-')}"
    app = App.create(repo, None, tmp_path / "xdg-cache", sandbox, image=image)
    app.env.update(user_env())
    yield app
    app.tear_down()
    refs = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                           image], capture_output=True, text=True, check=False).stdout.split()
    if refs:
        subprocess.run(["docker", "rmi", *refs], capture_output=True, check=False)


def check(app: App, name: str) -> dict:
    """`inv check --only NAME` on the working tree, as JSON: the one result."""
    proc = app.inv("check", "--json", "--only", name, timeout=600)
    assert_no_traceback(proc)
    assert proc.stdout.startswith("["), output(proc)
    result = json.loads(proc.stdout)[0]
    assert proc.returncode == (0 if result["ok"] else 1), output(proc)
    return result


@contextlib.contextmanager
def planted(path: Path, old: str, new: str) -> Iterator[None]:
    """`path` with `old` replaced by `new` for the block, then as it was."""
    before = path.read_text()
    assert old in before, f"{old!r} not in {path}"
    path.write_text(before.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_text(before)


def caught(app: App, name: str, path: Path, old: str, new: str) -> dict:
    """The check `name` fails on the breakage planted in `path`, and passes once it is gone."""
    with planted(path, old, new):
        result = check(app, name)
    assert not result["ok"], result
    return result


NOTES_ENDPOINT = '''

_engine = None


@app.get("/notes")
def notes() -> list:
    """The notes' bodies: the rows the deployed release serves."""
    global _engine
    from sqlalchemy import create_engine, text

    from app.config import settings

    _engine = _engine or create_engine(settings.{url})
    with _engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT body FROM notes ORDER BY id"))]
'''


def serve_notes(main: Path, url: str) -> None:
    """Give the app's main module a /notes endpoint reading the database at the URL
    `app.config.settings.<url>`."""
    main.write_text(main.read_text() + NOTES_ENDPOINT.format(url=url))


TITLE_MIGRATION = '''"""a title"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("notes", sa.Column("title", sa.String(80), nullable=True))


def downgrade() -> None:
    op.drop_column("notes", "title")
'''
BODY = "    body: Mapped[str] = mapped_column(String(200))\n"
TITLE = "    title: Mapped[str | None] = mapped_column(String(80), nullable=True)\n"


def add_title(models: Path, migrations: Path, main: Path) -> None:
    """v2: a nullable title column (expand only: v1 keeps working on it), its migration and
    VERSION 2."""
    text = models.read_text()
    assert BODY in text
    models.write_text(text.replace(BODY, BODY + TITLE))
    (migrations / "versions" / "0002_title.py").write_text(TITLE_MIGRATION)
    text = main.read_text()
    main.write_text(text.replace('VERSION = "1"', 'VERSION = "2"'))


def deploy_behind_caddy(app: App, sandbox: Sandbox, v2: Callable[[], None], *, user: str,
                        database: str) -> dict[str, float]:
    """v1 deployed with deploy-init's own settings behind a Caddy of the test's own, a row
    added; v2 (a migration) deployed and rolled back under a probe, no request failed; the
    backup taken before v2's migration restored: users get the maintenance page, never an
    error, and the rows and revision are the backup's. How long each step took."""
    from conftest import commit_all
    from test_proxy import new_proxy

    def sql(statement: str) -> list[list[str]]:
        return app.psql(statement, user=user, database=database)

    def notes() -> list[str]:
        try:
            status, body = app.get("/notes", timeout=30)
        except OSError as exc:
            status, body = 0, f"{exc}"
        if status != 200:
            logs = app.vm_docker("logs", "--tail", "30", *app.containers(service="app"))
            raise AssertionError(f"GET /notes: {status} {body}\n{output(logs)}")
        return body  # type: ignore[return-value]

    took: dict[str, float] = {}
    caddy = new_proxy(sandbox)
    try:
        app.proxy = caddy  # requests go to Caddy's port with the app's Host
        app.env.update({"DEPLOY_PROXY_HOST": app.host, "DEPLOY_HEALTH_URL": "",
                        **caddy.settings()})
        del app.env["DEPLOY_PROXY"]  # deploy.toml's, as deploy-init wrote it
        app.fab_ok("setup")
        t0 = time.monotonic()
        proc = app.inv("deploy", "--skip-tests", timeout=1200)
        took["deploy v1"] = time.monotonic() - t0
        assert proc.returncode == 0, output(proc)
        assert app.version() == {"version": "1"}
        assert sql("SELECT version_num FROM alembic_version") == [["0001"]]
        sql("INSERT INTO notes (body) VALUES ('before v2')")
        assert notes() == ["before v2"]

        v2()
        commit_all(app.repo, "v2: notes get a title")
        with Probe(app, rate=50) as probe:
            t0 = time.monotonic()
            proc = app.inv("deploy", "--skip-tests", timeout=1200)
            took["deploy v2"] = time.monotonic() - t0
        assert proc.returncode == 0, output(proc)
        print(f"deploy v2: {probe.summary()}")
        assert probe.failed == [], probe.summary()
        assert probe.versions() == ["1", "2"], probe.summary()
        assert sql("SELECT version_num FROM alembic_version") == [["0002"]]
        backup = app.backups()[-1]  # taken before v2's migration
        sql("INSERT INTO notes (body, title) VALUES ('after v2', 't')")
        assert notes() == ["before v2", "after v2"]

        with Probe(app, rate=50) as probe:
            t0 = time.monotonic()
            app.fab_ok("rollback")
            took["rollback"] = time.monotonic() - t0
        print(f"rollback: {probe.summary()}")
        assert probe.failed == [], probe.summary()
        assert probe.versions() == ["2", "1"], probe.summary()
        assert notes() == ["before v2", "after v2"]  # v1 on the expanded schema

        with Probe(app, rate=50) as probe:
            t0 = time.monotonic()
            out = app.fab_ok("restore", f"--backup={backup}")
            took["restore"] = time.monotonic() - t0
        pages = only_pages_and_answers(probe, "30")
        print(f"restore: {probe.summary()}, {len(pages)} maintenance pages")
        assert probe.hits[-1].status == 200, probe.summary()
        assert f"restored {backup}" in out, out
        assert app.version() == {"version": "1"}
        assert sql("SELECT version_num FROM alembic_version") == [["0001"]]
        assert notes() == ["before v2"]
        assert [e.get("action") or e.get("kind") for e in app.history()] == [
            "deploy", "deploy", "rollback", "restore"]
    finally:
        app.tear_down()
        caddy.tear_down()
    return took
