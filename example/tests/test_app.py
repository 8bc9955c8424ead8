"""The example app's own tests: a temp SQLite database migrated by Alembic."""

import os
import sys
from pathlib import Path

import pytest

EXAMPLE_DIR = Path(__file__).resolve().parents[1]
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # fastapi.testclient needs it

# Newer Starlette prefers the httpx2 package and warns when it finds only httpx.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="session")
def db_url(tmp_path_factory):
    # Nested folder that does not exist yet: the app must create it.
    db_file = tmp_path_factory.mktemp("exdb") / "sub" / "app.db"
    url = f"sqlite:///{db_file}"
    old = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url  # read by app.db at import and by env.py

    from alembic import command
    from alembic.config import Config

    cfg = Config(str(EXAMPLE_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(EXAMPLE_DIR / "migrations"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    yield url
    if old is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = old


@pytest.fixture()
def client(db_url, monkeypatch):
    monkeypatch.setenv("APP_SECRET", "test-secret-not-printed")
    monkeypatch.delenv("APP_FAIL_HEALTH", raising=False)
    from app.main import app
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def test_app_uses_migrated_database(db_url):
    from app.db import engine

    assert str(engine.url) == db_url


def test_health_ok(client):
    import app

    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": app.__version__}


def test_health_503_without_secret(client, monkeypatch):
    monkeypatch.delenv("APP_SECRET")
    r = client.get("/health")
    assert r.status_code == 503
    assert "APP_SECRET" in r.json()["detail"]


def test_health_never_echoes_secret(client):
    for path in ("/health", "/version", "/", "/items"):
        assert "test-secret-not-printed" not in client.get(path).text


def test_health_503_when_forced(client, monkeypatch):
    monkeypatch.setenv("APP_FAIL_HEALTH", "1")
    assert client.get("/health").status_code == 503


def test_health_503_when_database_unreachable(client, monkeypatch):
    import app.main as main
    from app.db import make_engine

    bad = make_engine("sqlite:////proc/no-such-dir/app.db")
    monkeypatch.setattr(main, "engine", bad)
    r = client.get("/health")
    assert r.status_code == 503
    assert "database" in r.json()["detail"]


def test_post_and_list_items(client):
    r = client.post("/items", json={"name": "first"})
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["name"] == "first"
    assert isinstance(item["id"], int)
    assert item["created_at"]

    r = client.get("/items")
    assert r.status_code == 200
    items = r.json()
    assert item in items
    assert set(items[0]) >= {"id", "name", "created_at"}


def test_post_rejects_bad_name(client):
    assert client.post("/items", json={}).status_code == 422
    assert client.post("/items", json={"name": ""}).status_code == 422
    assert client.post("/items", json={"name": "x" * 201}).status_code == 422


def test_version_shows_revision(client):
    import app
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config(str(EXAMPLE_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(EXAMPLE_DIR / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if app.__version__ == "1":
        assert head == "0001"
    r = client.get("/version")
    assert r.status_code == 200
    assert r.json() == {"version": app.__version__, "revision": head}


def test_model_name_from_env(client, monkeypatch):
    assert client.get("/").json()["model_name"] == "demo-model"
    monkeypatch.setenv("MODEL_NAME", "other-model")
    assert client.get("/").json()["model_name"] == "other-model"


def test_slow_answers_after_the_delay(client):
    import time

    started = time.monotonic()
    r = client.get("/slow", params={"seconds": 0.3})
    assert r.status_code == 200
    assert r.json()["slept"] == 0.3
    assert time.monotonic() - started >= 0.3


def test_slow_refuses_out_of_range(client):
    assert client.get("/slow", params={"seconds": 31}).status_code == 422
    assert client.get("/slow", params={"seconds": -1}).status_code == 422
